"""``python -m tokenkeep.cli``: the ``tokenkeep`` command without the console script."""

from tokenkeep.cli import main

main()
