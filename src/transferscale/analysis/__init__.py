"""Torch-free analysis of any results table: saturation fits, correlations, and the tables they read."""
from transferscale.analysis.correlations import Correlations, correlations, shots_trend
from transferscale.analysis.extrapolation import extrapolation_table, extrapolation_verdicts
from transferscale.analysis.gap import GapFit, crossing_size, effective_data, gap_points
from transferscale.analysis.hull import upper_hull
from transferscale.analysis.pareto import attach_costs, pareto_frontier
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
from transferscale.analysis.verdicts import count_sentence, saturation_verdicts, task_sentences

__all__ = ["Correlations", "FitTable", "SaturationFit", "correlations", "extrapolation_error", "finetune_points",
           "fit_saturation", "load_fit_table", "read_csv_table", "relative_depth", "shots_trend",
           "simulate_frontier", "study_points", "upper_hull"]
__all__ += ["attach_costs", "pareto_frontier"]
__all__ += ["count_sentence", "extrapolation_table", "extrapolation_verdicts", "saturation_verdicts",
            "task_sentences"]
__all__ += ["GapFit", "crossing_size", "effective_data", "gap_points"]

from transferscale.analysis.atodds import at_odds, best_checkpoints  # noqa: E402
from transferscale.analysis.samecurve import adjust_pvalues, same_curve_sentences, same_curve_test  # noqa: E402

__all__ += ["adjust_pvalues", "at_odds", "best_checkpoints", "same_curve_sentences", "same_curve_test"]
