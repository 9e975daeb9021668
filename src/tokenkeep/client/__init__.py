"""tokenkeep.client"""
