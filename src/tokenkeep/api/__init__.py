"""tokenkeep.api"""
