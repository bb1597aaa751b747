"""phenogen.report"""
