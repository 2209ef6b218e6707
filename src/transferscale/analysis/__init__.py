"""Torch-free analysis of any results table: saturation fits, correlations."""
from transferscale.analysis.correlations import Correlations, correlations, shots_trend
from transferscale.analysis.hull import upper_hull
from transferscale.analysis.saturation import SaturationFit, extrapolation_error, fit_saturation
from transferscale.analysis.synthetic import simulate_frontier
from transferscale.analysis.tables import read_csv_table, study_points

__all__ = ["Correlations", "SaturationFit", "correlations", "extrapolation_error", "fit_saturation",
           "read_csv_table", "shots_trend", "simulate_frontier", "study_points", "upper_hull"]
