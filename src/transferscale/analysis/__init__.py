"""Torch-free analysis of any results table: saturation fits, correlations."""
