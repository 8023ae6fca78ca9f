"""N processes train as one: the gradient that 2 gloo processes with half a batch each reach (each
backward, then the average DDP takes) equals one process's gradient with the whole batch, dropout
masks included, and the BatchNorm running statistics agree. Data-free, so every model's
distributed terms are checked on every run of the suite (the real `accelerate launch` runs are in
test_processes.py, slow)."""

import socket

import pytest
import test_dckt
import test_mhtn
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_xmodal.models.layers import batch_dropout

WORLD = 2


def transfer_dckt(**overrides):
    model = test_dckt.make_model(**overrides)
    model.set_training_stage("transfer")
    model.selection.update(torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]), torch.rand(8))
    return model, test_dckt.make_batch(n=8)


def mhtn():
    model = test_mhtn.make_model()
    model.set_training_progress(0.5)
    return model, test_mhtn.make_batch(n=8)


SETUPS = {
    "dckt": transfer_dckt,
    # dropout on the inputs and after every layer: the processes drop what one process drops
    "dckt_dropout": lambda: transfer_dckt(dropout=0.5, input_dropout=0.3),
    "mhtn": mhtn,
}


def step(name: str, rank: int | None = None):
    """Gradients and buffers after one backward on the whole batch, or on this rank's half."""
    model, batch = SETUPS[name]()
    if rank is not None:
        batch = {k: v.chunk(WORLD)[rank] for k, v in batch.items()}
    model(**batch).loss.backward()
    grads = {
        n: p.grad if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }
    if rank is not None:
        for g in grads.values():
            dist.all_reduce(g)
            g /= WORLD
    return grads, {n: b.clone() for n, b in model.named_buffers() if "running" in n}


def worker(rank: int, port: int, out: str):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        results = {name: step(name, rank) for name in SETUPS}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """Every setup's gradients and buffers from one launch of 2 processes."""
    out = tmp_path_factory.mktemp("distributed") / "rank0.pt"
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_two_processes_compute_the_gradient_of_one(name, two_processes):
    grads, buffers = two_processes[name]
    whole_grads, whole_buffers = step(name)
    assert any(g.abs().sum() > 0 for g in whole_grads.values())
    assert whole_buffers, "the model has BatchNorm layers"
    for n, g in whole_grads.items():
        torch.testing.assert_close(grads[n], g, atol=1e-5, rtol=1e-4, msg=n)
    for n, b in whole_buffers.items():
        torch.testing.assert_close(buffers[n], b, msg=n)


def test_one_process_drops_exactly_what_torch_dropout_drops():
    """On one CPU process the whole-batch mask is `F.dropout`'s own draw: same units kept, same
    1 / (1 − p) scale, so single-process runs are those of `nn.Dropout`; eval mode is identity."""
    x = torch.randn(64, 50)
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(x, 0.7, training=True)
    torch.manual_seed(3)
    got = batch_dropout(x, 0.7, training=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert 0.6 < (got == 0).float().mean() < 0.8
    assert batch_dropout(x, 0.7, training=False) is x
