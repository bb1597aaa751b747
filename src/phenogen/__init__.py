"""phenogen: from DNA barcodes to pictures of organisms, ancestors and extinct relatives."""

__version__ = "0.1.0"
__all__ = ["__version__"]
