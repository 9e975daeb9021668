"""tokenkeep.store"""
