"""tokenkeep.emulator"""
