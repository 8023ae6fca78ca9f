"""Plot the progressive transfer rounds of a DCKT run: target pairs selected and validation MAP.

    python scripts/plot_rounds.py runs/dckt-fashion_transfer_target-seed0   # writes rounds.png

Reads the run's `results.json` (`training_curve`: the pairs each round selected, logged by the
model at the end of each epoch; `validation_curve`: the validation MAP) and writes
`<run_dir>/rounds.png`, the training stages shaded.
"""

import argparse
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hf_xmodal.training import load_results


def plot_rounds(results: dict, path: Path) -> Path:
    training = results.get("training_curve") or []
    rounds = [p for p in training if "pairs_selected" in p]
    if not rounds:
        raise SystemExit(
            "the run logged no selected pairs: not a DCKT run with progressive transfer"
        )
    validation = results["validation_curve"]
    key = "map_avg" if "map_avg" in validation[0] else "rsum"
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    stages = {}
    for p in training:
        stages.setdefault(p["stage"], []).append(p["epoch"])
    for i, (stage, epochs) in enumerate(stages.items()):
        ax.axvspan(min(epochs) - 0.5, max(epochs) + 0.5, color=f"C{i}", alpha=0.08, label=stage)
    ax.plot(
        [p["epoch"] for p in rounds],
        [p["pairs_selected"] for p in rounds],
        "o-",
        color="C0",
        label="target pairs selected for the next epoch",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("pairs selected")
    right = ax.twinx()
    right.plot([p["epoch"] for p in validation], [p[key] for p in validation], "s-", color="C3")
    right.set_ylabel(f"validation {key}", color="C3")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{results['method']} on {results['dataset']}: progressive transfer rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    path = plot_rounds(load_results(args.run_dir), Path(args.run_dir) / "rounds.png")
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
