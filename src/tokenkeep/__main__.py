"""``python -m tokenkeep``: the same as the ``tokenkeep`` command."""

from tokenkeep.cli import main

main()
