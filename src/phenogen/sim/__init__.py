"""phenogen.sim"""
