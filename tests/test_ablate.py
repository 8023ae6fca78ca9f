"""scripts/ablate.py and scripts/report.py on short real runs, and the ablation on the card."""

import importlib.util
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.hub import ABLATION_FILE, build_upload_folder, load_method_card
from hf_xmodal.models import DSCMRConfig
from hf_xmodal.training import load_results, summarize

SCRIPTS = Path(__file__).parents[1] / "scripts"
SMALL = ["--model_config", '{"hidden_dims": [32], "embed_dim": 16}', "--epochs", "1"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    result = load("ablate").main(["--seeds", "0", "1", "--output_dir", str(out), *SMALL])
    return out, result


def test_each_component_is_switched_off_in_turn(ablation):
    """Components on by default are switched off; one left off (the optional instance-level
    term) is switched on."""
    out, result = ablation
    components = load_method_card("dscmr")["components"]
    defaults = DSCMRConfig().to_dict()
    expected = [("no-" if defaults[c["config"]] else "with-") + c["config"] for c in components]
    assert [r["variant"] for r in result["rows"]] == ["full", *expected]
    assert expected[-1] == "with-instance_contrastive_weight"
    for row, component in zip(result["rows"][1:], components, strict=True):
        for seed in (0, 1):
            config = load_results(out / f"{row['variant']}-seed{seed}")["config"]
            switched = 0 if row["variant"].startswith("no-") else 1.0
            assert config[component["config"]] == switched
            assert (config["hidden_dims"], config["embed_dim"]) == ([32], 16)
    runs = [load_results(out / f"full-seed{seed}") for seed in (0, 1)]
    assert {r["seed"] for r in runs} == {0, 1}
    assert result["rows"][0]["test"] == summarize(runs)
    assert json.loads((out / "ablation.json").read_text()) == result


def test_a_component_left_off_is_switched_on_at_the_paper_value():
    rows = {
        variant: (name, overrides)
        for variant, name, overrides in load("ablate").variants("daml", {})
    }
    assert rows["no-adversarial_weight"] == (
        "without Adversarial regulariser",
        {"adversarial_weight": 0},
    )
    name, overrides = rows["with-label_classification_weight"]
    assert name.startswith("with Label classification")
    paper = load_method_card("daml")["paper_values"]["label_classification_weight"]
    assert overrides == {"label_classification_weight": paper} and paper > 0


def test_an_interrupted_ablation_reuses_finished_runs(ablation):
    out, result = ablation
    stamp = (out / "full-seed0" / "results.json").stat().st_mtime_ns
    again = load("ablate").main(["--seeds", "0", "1", "--output_dir", str(out), *SMALL])
    assert again == result
    assert (out / "full-seed0" / "results.json").stat().st_mtime_ns == stamp


def test_the_card_shows_the_ablation(ablation, tmp_path):
    out, result = ablation
    folder = build_upload_folder(out / "full-seed0", tmp_path / "upload", "user/demo")
    assert json.loads((folder / "ablation.json").read_text()) == result
    card = ModelCard.load(folder / "README.md").text
    assert "Ablation on `wikipedia` (test split, mean ± std over seeds 0, 1" in card
    no_j2 = result["rows"][2]["test"]["map_avg"]
    assert "| without Common-space discrimination loss (J2) | " in card
    assert f"{no_j2['mean']:.4f} ± {no_j2['std']:.4f} |" in card


def test_the_card_shows_ablations_on_other_datasets(ablation, tmp_path):
    out, result = ablation
    data = tmp_path / "wiki-copy"
    load_dataset_by_name("wikipedia").save_to_disk(data)
    other_dir = tmp_path / "other"
    argv = ["--dataset", str(data), "--seeds", "0", "--output_dir", str(other_dir), *SMALL]
    other = load("ablate").main(argv)
    folder = build_upload_folder(
        out / "full-seed0", tmp_path / "upload", "user/demo", ablations=[other_dir / ABLATION_FILE]
    )
    assert json.loads((folder / "ablation.json").read_text()) == result
    assert json.loads((folder / "ablation-wiki-copy.json").read_text()) == other
    card = ModelCard.load(folder / "README.md").text
    assert card.index("Ablation on `wikipedia` (") < card.index(f"Ablation on `{data}` (")

    (tmp_path / "uncsm.json").write_text(json.dumps({**other, "model": "uncsm"}))
    with pytest.raises(ValueError, match="ablation of 'uncsm', this run is 'dscmr'"):
        build_upload_folder(
            out / "full-seed0", tmp_path / "x", "user/demo", ablations=[tmp_path / "uncsm.json"]
        )
    with pytest.raises(ValueError, match="no ablation file .*missing.json: run scripts/ablate.py"):
        build_upload_folder(
            out / "full-seed0", tmp_path / "x", "user/demo", ablations=[tmp_path / "missing.json"]
        )


def test_report_groups_seeds_of_one_recipe(ablation):
    out, result = ablation
    table = load("report").main([str(out / "full-seed0"), str(out / "full-seed1")])
    full = result["rows"][0]["test"]
    cells = " | ".join(f"{full[k]['mean']:.4f} ± {full[k]['std']:.4f}" for k in ("map_i2t",))
    assert "| dscmr |" in table and f"| 2 | {cells} |" in table
    everything = load("report").main([str(out)])
    assert everything.count("| dscmr |") == len(result["rows"])
    one = load_results(out / "full-seed0")["test"]["map_i2t"]
    assert f"| 1 | {one:.4f} |" in load("report").main([str(out / "full-seed0")])


def test_the_cards_baselines_follow_the_components():
    rows = load("ablate").variants("mhtn", {"hidden_dim": 8})
    components = load_method_card("mhtn")["components"]
    assert [variant for variant, _, _ in rows[1:-1]] == [f"no-{c['config']}" for c in components]
    assert rows[-1] == (
        "target-only",
        "target only (no transfer)",
        {"hidden_dim": 8, "source_semantic_weight": 0, "single_modal_mmd_weight": 0},
    )
