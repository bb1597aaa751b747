"""phenogen.data"""
