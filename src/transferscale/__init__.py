"""transferscale: pre-training -> downstream transfer studies, and the laws of where gains saturate.

    import transferscale as ts
    df = ts.read_results("transferscale-runs/default")
    fit = ts.SaturationFit(points="upper_hull").fit(us_acc, ds_acc)

Names are imported on first use, so `import transferscale` stays light and the analysis functions never
pull in torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TransferscaleError": "transferscale.errors",
    "StudySpec": "transferscale.spec",
    "load_spec": "transferscale.spec",
    "parse_spec": "transferscale.spec",
    "make_plan": "transferscale.plan",
    "run_study": "transferscale.engine.runner",
    "read_results": "transferscale.store",
    "Store": "transferscale.store",
    "load_dataset": "transferscale.data",
    "list_datasets": "transferscale.data",
    "fewshot_indices": "transferscale.probe",
    "ridge_probe": "transferscale.probe",
    "fewshot_probe": "transferscale.probe",
    "upper_hull": "transferscale.analysis",
    "SaturationFit": "transferscale.analysis",
    "fit_saturation": "transferscale.analysis",
    "extrapolation_error": "transferscale.analysis",
    "correlations": "transferscale.analysis",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transferscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
