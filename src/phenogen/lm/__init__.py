"""phenogen.lm"""
