"""tokenkeep.oauth"""
