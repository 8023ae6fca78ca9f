"""Results files: one JSON per training run, written atomically (PROTOCOL.md)."""

import hashlib
import json
import os
import statistics
from pathlib import Path
from typing import Any

from ..files import atomic_write

RESULTS_FILE = "results.json"


def config_hash(config_dict: dict[str, Any]) -> str:
    """Short SHA-256 of a config's JSON, independent of key order and library versions."""
    skip = {"transformers_version", "architectures", "auto_map", "_name_or_path", "dtype"}
    clean = {k: v for k, v in config_dict.items() if k not in skip}
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:12]


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> None:
    """Atomically write a results dict as indented JSON."""
    atomic_write(path, json.dumps(results, indent=2, sort_keys=False) + "\n")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON (a run directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    return json.loads(path.read_text())


def selection_key(captions: bool) -> str:
    """The validation metric that picks the checkpoint: R-sum for caption data, else MAP avg."""
    return "rsum" if captions else "map_avg"


def headline_metrics(metrics: dict[str, Any]) -> list[str]:
    """The keys of the numbers a run is known by: MAP@all, or Recall@K for caption data."""
    if "rsum" in metrics:
        return [f"r@{k}_{d}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["rsum"]
    if "map_i2t" not in metrics:  # more than two media: every direction (`map_image2audio`)
        return [k for k in metrics if k.startswith("map_") and "2" in k] + ["map_avg"]
    return ["map_i2t", "map_t2i", "map_avg"]


def headline(metrics: dict[str, float]) -> str:
    """The headline numbers of a metrics dict: MAP per direction, or Recall@K for caption data."""
    keys = headline_metrics(metrics)
    if "rsum" in metrics:  # r@5_i2t → "R@5 i2t 53.1", in percent
        keys = keys[:-1]
        return "  ".join(
            f"{k.replace('r@', 'R@').replace('_', ' ')} {100 * metrics[k]:.1f}" for k in keys
        )
    return "  ".join(f"{k.replace('map_', 'MAP ')} {metrics[k]:.4f}" for k in keys)


def summarize(
    runs: list[dict[str, Any]], split: str = "test"
) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation (None for one run) of every metric of `split` over runs
    (e.g. seeds)."""
    if not runs:
        raise ValueError("no runs to summarize")
    keys = [k for k, v in runs[0][split].items() if isinstance(v, float)]
    return {
        key: {
            "mean": statistics.fmean(r[split][key] for r in runs),
            "std": statistics.stdev(r[split][key] for r in runs) if len(runs) > 1 else None,
        }
        for key in keys
    }


def mean_std(summary: dict[str, dict[str, float | None]], key: str) -> str:
    """`0.2611 ± 0.0031` for one metric of a `summarize` result (`0.2611` for one run)."""
    mean, std = summary[key]["mean"], summary[key]["std"]
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
