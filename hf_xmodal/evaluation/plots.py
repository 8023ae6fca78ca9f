"""Precision-recall plots (matplotlib, Agg canvas; no global pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _array(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=float)


def plot_pr_curves(
    curves: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "Precision-recall",
) -> Path:
    """Write a PNG with one precision-recall line per entry of `curves` and return its path.

    Each value is a `precision_recall_curve` result: the full curve (`recall`, `precision`) is
    drawn as a line and the 11-point interpolated precision (`recall_levels`,
    `interpolated_precision`) as markers of the same colour; either part may be missing.
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        color = f"C{i % 10}"
        has_full = "recall" in curve and "precision" in curve
        has_points = "recall_levels" in curve and "interpolated_precision" in curve
        if not (has_full or has_points):
            raise ValueError(
                f"curve {name!r} needs 'recall'/'precision' or "
                "'recall_levels'/'interpolated_precision'"
            )
        if has_full:
            ax.plot(_array(curve["recall"]), _array(curve["precision"]), color=color, label=name)
        if has_points:
            ax.plot(
                _array(curve["recall_levels"]),
                _array(curve["interpolated_precision"]),
                color=color,
                marker="o",
                linestyle="none" if has_full else "-",
                label=None if has_full else name,
            )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path
