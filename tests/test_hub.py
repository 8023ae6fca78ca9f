"""Publishing on the Hub with the real clients, against the local Hub of `tests/hub_server.py`.

`huggingface_hub`, `transformers` and `datasets` read `HF_ENDPOINT` (and `HF_HUB_DISABLE_XET`) when
they are imported, and this pytest process has imported them already, so every client runs in a
fresh process whose environment points it at the server; the server runs here, in a thread, so
the tests can look at what it stored.
"""

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor

from hf_xmodal import MODELS
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.hub import (
    build_upload_folder,
    default_repo_name,
    load_method_card,
    metric_label,
    metric_table,
)
from hf_xmodal.training import load_results

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import USER, HubServer, lfs_pointer  # noqa: E402

ROOT = Path(__file__).parents[1]
TOKEN = "hf_local_test_token"
DUMP = """
batch = processor(**torch.load({inputs!r}))
with torch.no_grad():
    out = model(**batch)
torch.save({{"image": out.image_embeds, "text": out.text_embeds,
            "module": type(model).__module__}}, {output!r})
"""


def client_env(hub_url: str, home: Path, token: str = TOKEN) -> dict[str, str]:
    """This process's environment with every HF setting replaced by the local Hub's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_TOKEN=token,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
    )
    return env


def python(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Wait for a client process; it must succeed."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-4000:]
    return out, err


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="hub-test-") as tmp:
        yield Path(tmp)


@pytest.fixture
def scratch():
    with tempfile.TemporaryDirectory(prefix="hub-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN, chunk_size=64 * 1024) as server:  # every model's weights in parts
        yield server


@pytest.fixture(scope="module", params=sorted(MODELS))
def run_dir(request, workdir):
    """A real, short training run of scripts/train.py, for every model."""
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = workdir / f"run-{request.param}"
    # Wikipedia has no region maps or words: CMSL trains there on global features alone.
    config = ["--model_config", '{"local_saliency_weight": 0}'] if request.param == "cmsl" else []
    transfer = MODELS[request.param][1].requires_source_dataset  # its source: Wikipedia itself
    source = ["--source_dataset", "wikipedia"] if transfer else []
    train.main(
        ["--model", request.param, "--epochs", "2", "--output_dir", str(out), *config, *source]
    )
    return out


@pytest.fixture(scope="module")
def pushed(hub, run_dir, workdir):
    """The run pushed with scripts/push_to_hub.py under its default name; returns the repo id."""
    env = client_env(hub.url, workdir / f"home-push-{run_dir.name}")
    out, _ = finish(
        python([str(ROOT / "scripts" / "push_to_hub.py"), "--run_dir", str(run_dir)], env, workdir)
    )
    repo_id = re.search(r"pushed .* to (\S+)", out)[1]
    assert repo_id == f"{USER}/{default_repo_name(load_results(run_dir))}"
    return repo_id


def test_upload_folder_and_card_come_from_the_run(run_dir, scratch):
    folder = build_upload_folder(run_dir, scratch / "dry-run", "test-user/demo")
    model_files = {p.name for p in (run_dir / "model").iterdir()}
    assert {p.name for p in folder.iterdir()} == model_files | {
        "README.md",
        "results.json",
        "pr_curve.png",
    }
    for name in model_files:
        assert (folder / name).read_bytes() == (run_dir / "model" / name).read_bytes(), name
    with pytest.raises(ValueError, match="not empty"):
        build_upload_folder(run_dir, folder, "test-user/demo")

    results = load_results(run_dir)
    method = load_method_card(results["model_type"])
    test = results["test"]
    card = ModelCard.load(folder / "README.md")
    headline = ("map_i2t", "map_t2i", "map_avg")
    assert [r.metric_value for r in card.data.eval_results] == [round(test[k], 4) for k in headline]
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    meta = metadata_load(folder / "README.md")
    assert meta["model-index"][0]["name"] == "demo" and meta["library_name"] == "transformers"
    assert (
        "| MAP@all | {:.4f} | {:.4f} | {:.4f} |".format(*(test[k] for k in headline)) in card.text
    )
    assert "![Precision-recall curves on the test split](pr_curve.png)" in card.text
    for item in method["deviations"] + method["limitations"] + [method["citation"]]:
        assert item in card.text
    config = results["config"]
    for field, paper in method["paper_values"].items():
        differs = " (differs)" if config[field] != paper else ""
        assert f"| `{field}` | {config[field]} | {paper}{differs} |" in card.text
    assert f"| `epochs` | {results['hyperparameters']['epochs']} |" in card.text
    assert str(run_dir) not in card.text  # the local output_dir is not published


def test_a_card_table_has_a_column_per_direction_between_any_media():
    """MHTN's extra media (`map_image2tags`) get their own columns, the average last."""
    test = {"map_image2tags": 0.5, "map_tags2text": 0.4, "map_avg": 0.45, "precision@10_i2t": 0.6}
    assert metric_table(test) == {
        "columns": ["image → tags", "tags → text", "image → text", "average"],
        "rows": [
            {"name": "MAP@all", "cells": ["0.5000", "0.4000", "–", "0.4500"]},
            {"name": "P@10", "cells": ["–", "–", "0.6000", "–"]},
        ],
    }
    assert metric_label("map_tags2image") == "MAP@all tags → image"
    assert metric_label("map_avg") == "MAP@all average" and metric_label("rsum") == "R-sum"


def test_repo_names_follow_the_recipe_and_seed(run_dir):
    results = load_results(run_dir)
    name = default_repo_name(results)
    assert re.fullmatch(rf"{results['model_type']}-wikipedia-[0-9a-f]{{8}}-seed0", name)
    moved = {
        **results,
        "hyperparameters": {**results["hyperparameters"], "output_dir": "elsewhere"},
    }
    assert default_repo_name(moved) == name
    for change in ({"learning_rate": 1e-4}, {"epochs": 3}):
        other = {**results, "hyperparameters": {**results["hyperparameters"], **change}}
        assert default_repo_name(other) != name, change
    assert default_repo_name({**results, "config_hash": "0" * 12}) != name
    assert default_repo_name({**results, "seed": 1}).endswith("-seed1")


def test_push_stores_the_dry_run_folder(hub, pushed, run_dir, scratch):
    folder = build_upload_folder(run_dir, scratch / "expected", pushed)
    stored = hub.files(pushed)
    assert stored.pop(".gitattributes")
    assert stored == {p.name: p.read_bytes() for p in folder.iterdir()}
    repo = hub.repos[("models", pushed)]
    weights = repo.commits[repo.head].files["model.safetensors"]
    assert weights.sha256 is not None  # stored as an LFS object ...
    assert any(r.endswith("/part/2") for r in hub.requests)  # ... uploaded in parts
    assert "POST /api/validate-yaml" in hub.requests
    assert not hub.errors


def test_load_by_repo_id_in_fresh_processes(hub, pushed, run_dir, scratch):
    """With the package (its classes) and without it (the checkpoint's code), by running the
    card's own usage examples: the embeddings equal the saved model's."""
    readme = hub.files(pushed)["README.md"].decode()
    with_package, remote_code = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    test = load_dataset_by_name("wikipedia")["test"].with_format("torch")[:50]
    inputs = {"image_features": test["image_features"], "text_features": test["text_features"]}
    torch.save(inputs, scratch / "inputs.pt")

    hidden = 'import sys\nsys.modules["hf_xmodal"] = None  # not installed\n'
    processes = {}
    for name, code in (("package", with_package), ("remote", hidden + remote_code)):
        output = scratch / f"{name}.pt"
        script = code + DUMP.format(inputs=str(scratch / "inputs.pt"), output=str(output))
        env = client_env(hub.url, scratch / f"home-{name}")
        processes[name] = (python(["-c", script], env, scratch), output)
    for process, _ in processes.values():
        finish(process)

    model = AutoModel.from_pretrained(run_dir / "model").eval()
    processor = AutoProcessor.from_pretrained(run_dir / "model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the clients (OMP_NUM_THREADS=1): the same summation order
    try:
        with torch.no_grad():
            expected = model(**processor(**inputs))
    finally:
        torch.set_num_threads(threads)
    for name, (_, output) in processes.items():
        got = torch.load(output)
        assert got["module"].startswith(
            "hf_xmodal" if name == "package" else "transformers_modules"
        )
        torch.testing.assert_close(got["image"], expected.image_embeds, rtol=0, atol=0)
        torch.testing.assert_close(got["text"], expected.text_embeds, rtol=0, atol=0)
    assert not hub.errors


def test_a_name_never_holds_two_sets_of_weights(hub, pushed, run_dir, scratch):
    other = scratch / "other-run"
    shutil.copytree(run_dir, other)
    weights = load_file(other / "model" / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, other / "model" / "model.safetensors", metadata={"format": "pt"})
    head = hub.repos[("models", pushed)].head
    code = f"""
from hf_xmodal.hub import push_run
push_run({str(run_dir)!r}, {pushed!r})  # the same weights again: allowed
try:
    push_run({str(other)!r}, {pushed!r})
except ValueError as e:
    print("refused:", e)
"""
    out, _ = finish(python(["-c", code], client_env(hub.url, scratch / "home-again"), scratch))
    assert "already holds other weights" in out
    repo = hub.repos[("models", pushed)]
    assert repo.head != head  # the same weights were pushed again; the others were not
    assert (
        hub.files(pushed)["model.safetensors"]
        == (run_dir / "model" / "model.safetensors").read_bytes()
    )


def test_dataset_push_and_load_dataset(hub, scratch):
    """scripts/push_to_hub.py --dataset, then `load_dataset` by repo id from a fresh cache."""
    code = f"""
import sys
import numpy as np
from datasets import load_dataset
from hf_xmodal import MODELS
from hf_xmodal.data import load_dataset_by_name
sys.path.insert(0, {str(ROOT / "scripts")!r})
from push_to_hub import main
repo_id = main(["--dataset", "wikipedia", "--repo_id", "wiki"])
local, loaded = load_dataset_by_name("wikipedia"), load_dataset(repo_id)
assert list(loaded) == list(local), list(loaded)
for split in local:
    assert loaded[split].features == local[split].features, split
    for column in local[split].column_names:
        a, b = loaded[split].with_format("numpy")[column], local[split].with_format("numpy")[column]
        assert np.array_equal(a, b), (split, column)
print("loaded", {{s: len(d) for s, d in loaded.items()}})
"""
    out, _ = finish(python(["-c", code], client_env(hub.url, scratch / "home-data"), scratch))
    assert f"to {USER}/wiki" in out and "'test': 462" in out
    parquet = [p for p in hub.files(f"{USER}/wiki", kind="datasets") if p.endswith(".parquet")]
    assert len(parquet) == 3
    assert any(r.startswith("GET /datasets/") and r.endswith(".parquet") for r in hub.requests)
    assert not hub.errors


def _request(hub, method, path, body=None, token=TOKEN, headers=None):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(hub.url + path, data=data, method=method)
    for name, value in {"Authorization": f"Bearer {token}", **(headers or {})}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_server_rejects_broken_uploads(hub):
    """What makes the round trips above meaningful: nothing reaches a repo unless it arrived."""
    assert _request(hub, "POST", "/api/repos/create", {"name": "x"}, token="wrong")[0] == 401
    assert _request(hub, "POST", "/api/repos/create", {"name": "checks"})[0] == 200
    data = b"\0weights" * 1000
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}
    status, _, body = _request(hub, "POST", f"/{USER}/checks.git/info/lfs/objects/batch", batch)
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    path = href.removeprefix(hub.url)
    assert _request(hub, "PUT", path, data[:-1] + b"!")[0] == 400  # altered in transit
    commit = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}}
    ndjson = "\n".join(json.dumps(x) for x in ({"key": "header", "value": {}}, commit)).encode()
    commit_path = f"/api/models/{USER}/checks/commit/main"
    assert _request(hub, "POST", commit_path, ndjson)[0] == 422  # never uploaded
    assert _request(hub, "PUT", path, data)[0] == 200
    regular = {"key": "file", "value": {"path": "a.txt", "encoding": "base64"}}
    regular["value"]["content"] = base64.b64encode(b"hello").decode()
    ndjson += b"\n" + json.dumps(regular).encode()
    assert _request(hub, "POST", commit_path, ndjson)[0] == 200

    status, headers, body = _request(hub, "GET", f"/{USER}/checks/resolve/main/w.bin")
    assert status == 200 and body == data
    assert headers["X-Linked-Etag"] == f'"{oid}"' and headers["X-Linked-Size"] == str(len(data))
    assert headers["X-Repo-Commit"] == hub.repos[("models", f"{USER}/checks")].head
    ranged = _request(
        hub, "GET", f"/{USER}/checks/resolve/main/w.bin", headers={"Range": "bytes=2-5"}
    )
    assert ranged[0] == 206 and ranged[2] == data[2:6]
    missing = _request(hub, "HEAD", f"/{USER}/checks/resolve/main/nope.bin")
    assert missing[0] == 404 and missing[1]["X-Error-Code"] == "EntryNotFound"
    status, _, body = _request(hub, "GET", f"/api/models/{USER}/checks/tree/main")
    listing = {item["path"]: item for item in json.loads(body)}
    assert listing["w.bin"]["lfs"] == {
        "oid": oid,
        "size": len(data),
        "pointerSize": len(lfs_pointer(oid, len(data))),
    }
    assert listing["a.txt"]["size"] == 5 and "lfs" not in listing["a.txt"]


def test_card_metadata_validation(hub, run_dir, scratch):
    card = (
        build_upload_folder(run_dir, scratch / "card", "test-user/card") / "README.md"
    ).read_text()
    assert (
        _request(hub, "POST", "/api/validate-yaml", {"content": card, "repoType": "model"})[0]
        == 200
    )
    broken = card.replace("    - type: map\n      value:", "    - type: map\n      valu:", 1)
    status, _, body = _request(hub, "POST", "/api/validate-yaml", {"content": broken})
    assert status == 400 and "value" in json.loads(body)["errors"][0]["message"]
    no_yaml = card.split("---\n", 2)[2]
    assert _request(hub, "POST", "/api/validate-yaml", {"content": no_yaml})[0] == 400


@pytest.mark.skipif(
    not os.environ.get("HF_TOKEN"),
    reason="HF_TOKEN is not set: the round trip through huggingface.co needs a write token",
)
def test_round_trip_through_the_real_hub(run_dir, scratch):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_HUB_OFFLINE")}
    env["HF_HOME"] = str(scratch / "home-real")
    name = f"hf-xmodal-test-{uuid.uuid4().hex[:8]}"
    push = f"from hf_xmodal.hub import push_run\nprint(push_run({str(run_dir)!r}, {name!r}, True))"
    out, _ = finish(python(["-c", push], env, scratch))
    repo_id = out.strip().splitlines()[-1]
    try:
        code = f"""
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True).eval()
local = AutoModel.from_pretrained({str(run_dir / "model")!r}, trust_remote_code=True).eval()
x = torch.rand(4, model.config.image_feature_dim)
with torch.no_grad():
    assert torch.equal(model.get_image_features(x), local.get_image_features(x))
"""
        finish(python(["-c", code], env, scratch))
    finally:
        delete = f"from huggingface_hub import HfApi; HfApi().delete_repo({repo_id!r})"
        finish(python(["-c", delete], env, scratch))
