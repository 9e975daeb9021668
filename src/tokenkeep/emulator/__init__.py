"""The Salesforce org emulator: OAuth, sessions, the REST data API and an admin API.

``async with Emulator.running(orgs=2) as emu:`` serves a login host and one instance host
per org on loopback; ``emu.admin`` drives it (see shared/DESIGN.md, "Emulator contract").
"""

from tokenkeep.emulator.admin import Admin, AdminError
from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.server import Emulator, run_emulator

__all__ = ["Admin", "AdminError", "Emulator", "RestContext", "run_emulator"]
