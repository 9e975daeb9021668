"""tokenkeep.proxy"""
