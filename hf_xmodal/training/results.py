"""Results files: one JSON per training run, written atomically (PROTOCOL.md)."""

import hashlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def config_hash(config_dict: dict[str, Any]) -> str:
    """Short SHA-256 of a config's JSON, independent of key order and library versions."""
    skip = {"transformers_version", "architectures", "auto_map", "_name_or_path", "dtype"}
    clean = {k: v for k, v in config_dict.items() if k not in skip}
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:12]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> None:
    """Atomically write a results dict as indented JSON."""
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=False) + "\n")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON (a run directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    return json.loads(path.read_text())


def headline(metrics: dict[str, float]) -> str:
    """The headline numbers of a metrics dict: MAP per direction, or Recall@K for caption data."""
    if "rsum" in metrics:
        pairs = [(d, k) for d in ("i2t", "t2i") for k in (1, 5, 10)]
        return "  ".join(f"R@{k} {d} {100 * metrics[f'r@{k}_{d}']:.1f}" for d, k in pairs)
    return "  ".join(f"MAP {d} {metrics[f'map_{d}']:.4f}" for d in ("i2t", "t2i", "avg"))


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
