"""transferscale: pre-training -> downstream transfer studies, and the laws of where gains saturate."""
__version__ = "0.1.0"
