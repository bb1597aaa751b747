"""phenogen.phylo"""
