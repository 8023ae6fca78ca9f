"""A real `scripts/train.py` process killed with SIGKILL resumes to the uninterrupted result.

Killed mid-epoch, and mid-way through writing a checkpoint (the kill lands at an observed file
event: the checkpoint's folder exists and its state file, written last, does not); a copied
checkpoint with a truncated weights file and no state file (a torn write) is skipped on resume.
One process and a fixed seed make the runs deterministic, so the validation curve, the training
curve and the test metrics must match exactly.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "train.py"
ARGS = [
    "--model_config",
    '{"hidden_dims": [64], "embed_dim": 32}',
    "--eval_every",
    "1",
    "--epochs",
    "3",
]
STATE_FILE = "train_state.json"
TIMEOUT = 600


def start(output_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), *ARGS, "--output_dir", str(output_dir), *extra]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err[-3000:]


def results(output_dir: Path) -> dict:
    """What must not depend on interruptions: the curves, the selection and the test metrics."""
    saved = json.loads((output_dir / "results.json").read_text())
    keys = ("validation_curve", "training_curve", "best_epoch", "validation", "test")
    return {key: saved[key] for key in keys}


def checkpoint(output_dir: Path, epoch: int) -> Path:
    return output_dir / "checkpoints" / f"epoch_{epoch}"


def wait_for(process: subprocess.Popen, condition, poll: float = 0.0005) -> bool:
    """Poll until `condition()` holds (True) or the process ends (False)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("training did not reach the awaited point")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, float]:
    """The results of a run left alone, and how long its second epoch took (from the first
    checkpoint to the start of the second)."""
    out = tmp_path_factory.mktemp("straight")
    process = start(out)
    assert wait_for(process, (checkpoint(out, 1) / STATE_FILE).is_file)
    first = time.monotonic()
    assert wait_for(process, checkpoint(out, 2).exists)
    epoch_seconds = time.monotonic() - first
    finish(process)
    return results(out), epoch_seconds


def test_killed_mid_epoch_then_torn_checkpoint(uninterrupted, tmp_path):
    expected, epoch_seconds = uninterrupted
    out = tmp_path / "run"
    process = start(out)
    done = checkpoint(out, 1) / STATE_FILE
    assert wait_for(process, done.is_file), "training ended before its first checkpoint"
    time.sleep(epoch_seconds / 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not checkpoint(out, 2).exists(), "the kill was meant to land in epoch 2"
    # A torn write of the next checkpoint: its files copied, one truncated, no state file.
    torn = checkpoint(out, 2)
    shutil.copytree(checkpoint(out, 1), torn)
    (torn / STATE_FILE).unlink()
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (torn / f".{STATE_FILE}.partial.tmp").write_text('{"epoch": 2, "be')
    finish(start(out, "--resume"))
    assert results(out) == expected


def test_killed_while_writing_a_checkpoint(uninterrupted, tmp_path):
    out = tmp_path / "run"
    process = start(out)
    caught = None
    for epoch in range(1, 4):
        folder, state = checkpoint(out, epoch), checkpoint(out, epoch) / STATE_FILE
        if not wait_for(process, lambda f=folder: f.is_dir() and any(f.iterdir())):
            break
        process.send_signal(signal.SIGSTOP)
        if not state.exists():  # stopped between the first file and the state file
            caught = epoch
            break
        process.send_signal(signal.SIGCONT)
    assert caught is not None, "no checkpoint write was caught in progress"
    written = sorted(p.name for p in checkpoint(out, caught).iterdir())
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert written and STATE_FILE not in written
    finish(start(out, "--resume"))
    assert results(out) == uninterrupted[0]
