"""phenogen.diffusion"""
