"""One look for every figure of the report: colours, markers, fonts, and a figure -> PNG (base64) helper.

The colours of a model family, a model size or a task are fixed here and reused by every figure, so a
reader learns them once. Matplotlib runs on the Agg backend: the report renders on a machine with no display.
"""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
PANEL_W, PANEL_H = 2.45, 2.0  # inches per small-multiple panel

RC = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7.5,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#555555",
    "axes.titlepad": 4,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}

FAMILY_COLOURS = {"vit": "#1f77b4", "mixer": "#2ca02c", "resnet": "#d62728", "pixels": "#444444",
                  "words": "#444444"}
FAMILY_LABELS = {"vit": "ViT", "mixer": "MLP-Mixer", "resnet": "ResNet", "pixels": "raw pixels",
                 "words": "bag of words", "timm": "timm (pretrained)", "hf": "Hugging Face (pretrained)"}
_OTHER_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e", "#7f7f7f"]
SIZE_MARKERS = {"s": "o", "m": "s", "l": "^", "xl": "D"}
HULL_COLOUR = "#111111"
ALL_FIT_COLOUR = "#8a8a8a"
SATURATION_COLOUR = "#e08a00"
TASK_CMAP = "tab10"


def family_colour(family) -> str:
    """A family's fixed colour; unknown families get a stable colour from their name."""
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    return _OTHER_COLOURS[sum(map(ord, str(family))) % len(_OTHER_COLOURS)]


def family_label(family) -> str:
    return FAMILY_LABELS.get(family, str(family))


def task_colours(tasks) -> dict:
    """A colour per task, in the order given (tab10, then tab20 for more than ten tasks)."""
    tasks = list(tasks)
    cmap = plt.get_cmap(TASK_CMAP if len(tasks) <= 10 else "tab20")
    return {t: cmap(i % cmap.N) for i, t in enumerate(tasks)}


def size_marker(size) -> str:
    return SIZE_MARKERS.get(size, "o") if isinstance(size, str) else "o"


def budget_area(rank: np.ndarray) -> np.ndarray:
    """Marker area growing with the training budget's rank (0 = smallest), so longer training reads bigger."""
    return 24 + 20 * np.asarray(rank, dtype=float)


def head_height(legend_rows: int = 0) -> float:
    """Inches above the panels for the figure title and `legend_rows` rows of legend."""
    return 0.45 + (0.21 * legend_rows + 0.14 if legend_rows else 0.0)


def new_grid(n_rows: int, n_cols: int, *, sharex=False, sharey=False, w=PANEL_W, h=PANEL_H, head=0.45,
             left=0.62, right=0.15, bottom=0.5, wgap=0.5, hgap=0.42):
    """A grid of small multiples laid out in fixed inches (no tight_layout: it costs a full draw per call).

    Panels are w x h inches with wgap / hgap between them (room for tick labels and titles) and `head`
    inches at the top for the title and legend (see head_height).

    sharex=True: x tick labels on the bottom row only, as matplotlib's sharing shows them, but the axes are
    not linked: the caller gives every panel the same x range. Linked axes update each other on every
    change, which for the 80 panels of a 20-task study costs seconds.
    """
    if n_cols * w < 6.0:  # one or two columns: bigger panels, so titles and legends fit above them
        scale = min(1.8, 6.0 / (n_cols * w))
        w, h = w * scale, h * scale
    fig_w = left + right + n_cols * w + (n_cols - 1) * wgap
    fig_h = head + bottom + n_rows * h + (n_rows - 1) * hgap
    with plt.rc_context(RC):
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(fig_w, fig_h), sharey=sharey, squeeze=False)
        if sharex:
            for ax in axes[:-1].ravel():
                ax.xaxis.set_tick_params(labelbottom=False)
        fig.subplots_adjust(left=left / fig_w, right=1 - right / fig_w, bottom=bottom / fig_h,
                            top=1 - head / fig_h, wspace=wgap / w, hspace=hgap / h)
    return fig, axes


def finish(fig, title: str, legend_rows=()) -> None:
    """The figure's title at the top left, and its legend beneath it, one row per list of handles
    (rows read left to right; one matplotlib legend with several columns would fill column by column)."""
    height, x0 = fig.get_figheight(), 0.1 / fig.get_figwidth()
    with plt.rc_context(RC):
        fig.suptitle(title, x=x0, ha="left", va="top", y=1 - 0.1 / height, fontweight="bold")
        for i, handles in enumerate(r for r in legend_rows if r):
            fig.legend(handles=handles, loc="upper left", ncol=len(handles), frameon=False, handlelength=2.2,
                       columnspacing=1.5, borderaxespad=0, bbox_to_anchor=(x0, 1 - (0.38 + 0.21 * i) / height))


def to_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed (figures are many and large)."""
    buf = io.BytesIO()
    with plt.rc_context(RC):
        fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def rc():
    """The report's rc context, for code that draws into axes made by `new_grid`."""
    return plt.rc_context(RC)
