"""tokenkeep.lifecycle"""
