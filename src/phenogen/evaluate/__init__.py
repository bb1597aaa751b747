"""phenogen.evaluate"""
