"""phenogen.dna"""
