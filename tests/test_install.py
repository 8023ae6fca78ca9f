"""The package as `pip install` leaves it: a wheel built from this tree, installed in a fresh
virtual environment (torch and the other dependencies come from this environment, the package
itself only from the wheel), pushes a run to the local Hub and loads its own `evaluate` module."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from test_hub import TOKEN, client_env
from test_train import load_script

from hf_xmodal.hub import build_upload_folder, default_repo_name
from hf_xmodal.training import load_results

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import USER, HubServer  # noqa: E402

ROOT = Path(__file__).parents[1]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def user_env(hub_url: str, home: Path) -> dict[str, str]:
    """A user's environment: the local Hub, and no path to this source tree."""
    env = client_env(hub_url, home)
    env.pop("PYTHONPATH", None)
    return env


def run(args: list, env: dict, cwd: Path) -> str:
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The python of a fresh venv holding the package from a wheel of this tree."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(root / "dist"), str(source)],
        env,
        root,
    )
    (wheel,) = (root / "dist").glob("hf_xmodal-*.whl")
    run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")], env, root)
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env, root)
    return python


def test_the_wheel_carries_the_cards_and_the_metric(venv, tmp_path):
    code = (
        "import hf_xmodal, hf_xmodal.hub, hf_xmodal.evaluation as e\n"
        "print(hf_xmodal.__file__)\n"
        "print(sorted(p.name for p in hf_xmodal.hub.CARDS_DIR.iterdir()))\n"
        "import evaluate\n"
        "m = evaluate.load(e.metric_path())\n"
        "print(m.compute(image_embeds=[[1, 0], [0, 1]], text_embeds=[[1, 0], [0, 1]], "
        "labels=[0, 1])['map_avg'])\n"
    )
    env = user_env("http://127.0.0.1:9", tmp_path / "home")  # no Hub: nothing may be fetched
    env.update(HF_HUB_OFFLINE="1")
    where, cards, map_avg = run([venv, "-c", code], env, tmp_path).splitlines()
    assert Path(where).is_relative_to(venv.parents[1]), where  # the wheel's copy, not this tree
    expected = sorted(p.name for p in (ROOT / "model_cards").iterdir())
    assert cards == str(expected) and "template.md" in cards
    assert map_avg == "1.0"


def test_push_from_the_installed_package(venv, tmp_path):
    """A user with the package installed and a run directory publishes it with `push_run`."""
    run_dir = tmp_path / "run"
    load_script().main(["--epochs", "1", "--output_dir", str(run_dir)])
    code = (
        "import hf_xmodal, hf_xmodal.hub\n"
        f"print(hf_xmodal.hub.push_run({str(run_dir)!r}))\n"
        "print(hf_xmodal.__file__)\n"
    )
    with HubServer(token=TOKEN) as hub:
        env = user_env(hub.url, tmp_path / "home")
        repo_id, where = run([venv, "-c", code], env, tmp_path).splitlines()
        assert Path(where).is_relative_to(venv.parents[1]), where
        assert repo_id == f"{USER}/{default_repo_name(load_results(run_dir))}"
        stored = hub.files(repo_id)
        assert not hub.errors
    expected = build_upload_folder(run_dir, tmp_path / "expected", repo_id)
    assert stored.pop(".gitattributes")
    assert stored == {p.name: p.read_bytes() for p in expected.iterdir()}
    card = ModelCard(stored["README.md"].decode())
    assert card.data.eval_results and "## Training procedure" in card.text
