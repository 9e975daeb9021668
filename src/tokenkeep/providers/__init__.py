"""tokenkeep.providers"""
