"""Tabulate results files: one row per method, dataset and recipe, mean ± std over its seeds.

    python scripts/report.py runs/*/results.json runs/baselines/*/results.json
    python scripts/report.py runs/ --split validation

Runs that differ only in their seed (and output folder) share a row; a single run shows its value.
The table is markdown.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from hf_xmodal.hub import headline_metrics, metric_label, run_variant
from hf_xmodal.training import RESULTS_FILE, load_results, mean_std, summarize


def results_files(paths: list[str]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(path.rglob(RESULTS_FILE))
        else:
            raise SystemExit(f"{path} does not exist")
    if not files:
        raise SystemExit(f"no {RESULTS_FILE} under {paths}")
    return files


def recipe(results: dict) -> tuple[str, str, str]:
    """What a row stands for: method, dataset, and a hash of everything but the seed."""
    variant = run_variant(results) if results["seed"] is not None else results["config_hash"]
    return results["method"], results["dataset"], variant


def main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results files, run folders or folders of runs")
    parser.add_argument("--split", default="test", choices=["test", "validation"])
    args = parser.parse_args(argv)
    groups = defaultdict(list)
    for path in results_files(args.paths):
        groups[recipe(load_results(path))].append(load_results(path))
    lines = []
    for dataset in sorted({key[1] for key in groups}):
        rows = {key: runs for key, runs in groups.items() if key[1] == dataset}
        first = next(iter(rows.values()))[0][args.split]
        keys = headline_metrics(first)
        lines += [
            f"\n{dataset}, {args.split} split (mean ± std over seeds)\n",
            "| method | recipe | seeds | " + " | ".join(metric_label(k) for k in keys) + " |",
            "| --- " * (len(keys) + 3) + "|",
        ]
        for (method, _, variant), runs in sorted(rows.items()):
            summary = summarize(runs, args.split)
            cells = ["–" if k not in summary else mean_std(summary, k) for k in keys]
            lines.append(f"| {method} | {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
