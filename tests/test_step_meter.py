"""The trainer's on-device loss accounting (tas.engine.step_meter)."""

import math

import pytest
import torch

from tas.engine.step_meter import StepMeter
from tas.errors import TasError


def _step(meter, step, ce, kd, logits, target):
    terms = {"loss_ce": torch.tensor(ce), "loss_kd": torch.tensor(kd)}
    meter.add(step, terms, terms["loss_ce"] + terms["loss_kd"], logits, target)


def test_sums_are_batch_weighted_and_hits_counted():
    meter = StepMeter(torch.device("cpu"))
    logits_a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])  # predicts 0, 1, 0
    logits_b = torch.tensor([[0.0, 5.0]])  # predicts 1
    _step(meter, 0, 1.5, 0.25, logits_a, torch.tensor([0, 0, 0]))
    _step(meter, 1, 0.5, 1.0, logits_b, torch.tensor([1]))
    totals = meter.totals()
    assert totals.seen == 4 and totals.correct == 3
    assert totals.sums["loss_ce"] == pytest.approx(1.5 * 3 + 0.5 * 1)
    assert totals.sums["loss_kd"] == pytest.approx(0.25 * 3 + 1.0 * 1)
    assert totals.sums["loss"] == pytest.approx(1.75 * 3 + 1.5 * 1)
    assert meter.first_non_finite() is None


def test_first_non_finite_step_and_terms_are_kept():
    meter = StepMeter(torch.device("cpu"))
    logits, target = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    _step(meter, 0, 1.0, 1.0, logits, target)
    _step(meter, 1, 1.0, 1.0, logits, target)
    _step(meter, 2, 1.0, math.nan, logits, target)
    _step(meter, 3, math.inf, math.nan, logits, target)  # later failures do not overwrite the first
    bad = meter.first_non_finite()
    assert bad is not None and bad.step == 2 and bad.terms == ("loss_kd",)


def test_accumulating_never_reads_a_value_back_to_the_host():
    # Tensors on the meta device have no data: any float()/int()/bool() of one raises. The per-step
    # path must run entirely on the device, which is what keeps a GPU's queue full.
    meta = torch.device("meta")
    meter = StepMeter(meta)
    for step in range(3):
        terms = {"loss_ce": torch.empty((), device=meta), "loss_nce_ts": torch.empty((), device=meta)}
        loss = terms["loss_ce"] + terms["loss_nce_ts"]
        meter.add(step, terms, loss, torch.empty(8, 10, device=meta), torch.empty(8, dtype=torch.long, device=meta))
    with pytest.raises((RuntimeError, NotImplementedError)):
        meter.totals()  # the read that the trainer does every SYNC_EVERY steps


def test_terms_must_not_change_within_an_epoch():
    meter = StepMeter(torch.device("cpu"))
    logits, target = torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)
    _step(meter, 0, 1.0, 1.0, logits, target)
    with pytest.raises(TasError, match="loss terms changed"):
        meter.add(1, {"loss_ce": torch.tensor(1.0)}, torch.tensor(1.0), logits, target)


def _rank_stops(rank: int, world: int, port: int, results) -> None:
    import os
    from types import SimpleNamespace
    from pathlib import Path

    import torch.distributed as dist

    from tas.engine.distributed import DistContext
    from tas.engine.trainer import NonFiniteLoss, _stop_if_non_finite

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        meter = StepMeter(torch.device("cpu"))
        logits, target = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
        _step(meter, 0, 1.0, math.nan if rank == 1 else 1.0, logits, target)  # only rank 1 sees the NaN
        job = SimpleNamespace(ctx=DistContext(rank, world, rank), placement=SimpleNamespace(device=torch.device("cpu")),
                              out_dir=Path("/tmp/never-written"))
        try:
            _stop_if_non_finite(meter, job, epoch=0)
            results.put((rank, "continued"))
        except NonFiniteLoss as err:
            results.put((rank, str(err)))
    finally:
        dist.destroy_process_group()


def test_every_process_stops_when_one_sees_a_non_finite_loss():
    # Under DDP a NaN on one rank must stop all of them; one rank stopping alone would leave the
    # others blocked in the next collective.
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank_stops, args=(rank, 2, port, results)) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    messages = dict(results.get(timeout=5) for _ in procs)
    assert messages[1].startswith("loss_kd became non-finite at epoch 1 step 1")
    assert messages[0].startswith("a loss term became non-finite in another process during epoch 1")
