"""Torch-free analysis of any results table: saturation fits, correlations, and the tables they read."""
from transferscale.analysis.correlations import Correlations, correlations, shots_trend
from transferscale.analysis.hull import upper_hull
from transferscale.analysis.saturation import SaturationFit, extrapolation_error, fit_saturation
from transferscale.analysis.synthetic import simulate_frontier
from transferscale.analysis.tables import (
    FitTable,
    finetune_points,
    load_fit_table,
    read_csv_table,
    relative_depth,
    study_points,
)

__all__ = ["Correlations", "FitTable", "SaturationFit", "correlations", "extrapolation_error", "finetune_points",
           "fit_saturation", "load_fit_table", "read_csv_table", "relative_depth", "shots_trend",
           "simulate_frontier", "study_points", "upper_hull"]
