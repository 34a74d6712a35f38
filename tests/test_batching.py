"""The paper's global batch on any number of processes (tas.batching): the arithmetic, the loader's
micro-batches, and the proof that accumulation equals DDP: one process accumulating 4 micro-batches
ends an epoch with the same parameters as 4 gloo processes of one micro-batch each, for KD and TAS."""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tas import batching
from tas.config import load_config
from tas.data.loader import InMemoryLoader, epoch_indices
from tas.data.spec import AugmentSpec
from tas.describe import effective_recipe
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")


def test_plan_splits_the_global_batch_over_processes_and_accumulates_the_rest():
    recipe = CFG.recipes["cnn"]  # OFA: 1024 = 128 per GPU x 8 GPUs
    for processes, accumulation in ((1, 8), (2, 4), (4, 2), (8, 1)):
        plan = batching.plan(recipe, processes)
        assert (plan.global_batch, plan.micro_batch, plan.accumulation) == (1024, 128, accumulation)
        assert plan.steps_per_epoch(50_000) == 48  # OFA's log: "Train: 287 [47/48]"
    mini = batching.plan(CFG.recipes["mini"], 2)  # no micro_batch: the global batch split over the processes
    assert (mini.micro_batch, mini.accumulation) == (32, 1)


@pytest.mark.parametrize("fields, processes, words", [
    ({"global_batch": 100}, 8, "does not split over 8 processes"),
    ({"micro_batch": 96}, 1, "must divide the 1024 samples"),
    ({"micro_batch": 256}, 8, "must divide the 128 samples"),
])
def test_plan_refuses_a_batch_that_does_not_split(fields, processes, words):
    with pytest.raises(TasError, match=words):
        batching.plan(replace(CFG.recipes["cnn"], **fields), processes)


def test_check_refuses_an_experiment_whose_recipe_does_not_split(tmp_path):
    with pytest.raises(TasError, match=r"experiments\.cifar100 \(gpus_per_job 3\): recipes\.\w+\.global_batch 1024"):
        load_config(ROOT / "params.yaml", ["experiments.cifar100.gpus_per_job=3"])


def test_an_epoch_needs_one_full_global_batch():
    with pytest.raises(TasError, match="larger than the 1000 training images"):
        batching.check_epoch(batching.plan(CFG.recipes["cnn"]), 1000, "cnn")


def test_gpus_per_job_keeps_the_global_batch_and_the_steps_per_epoch():
    one = effective_recipe(CFG, CFG.experiment("cifar100"), "r18")
    cfg2 = load_config(ROOT / "params.yaml", ["experiments.cifar100.gpus_per_job=2"])
    two = effective_recipe(cfg2, cfg2.experiment("cifar100"), "r18")
    for key in ("global_batch", "micro_batch", "steps_per_epoch", "total_steps", "warmup_steps", "lr"):
        assert one[key] == two[key], key
    assert (one["processes"], one["accumulation"], two["processes"], two["accumulation"]) == (1, 8, 2, 4)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_process_count_reads_the_same_micro_batches(world):
    n, global_batch, micro = 70, 16, 4  # 4 optimizer steps; 6 images dropped
    single = epoch_indices(n, 3, 1, True, 0, 1, global_batch).view(-1, micro)
    shards = [epoch_indices(n, 3, 1, True, rank, world, global_batch).view(-1, micro) for rank in range(world)]
    per_step = global_batch // micro
    for step in range(n // global_batch):
        expected = single[step * per_step:(step + 1) * per_step]
        # rank r's micro-batches of step k are the r-th 1/world of the single process's
        got = torch.cat([s[step * per_step // world:(step + 1) * per_step // world] for s in shards])
        assert torch.equal(got, expected)
    assert sum(len(s) for s in shards) * micro == (n // global_batch) * global_batch


def test_one_process_with_its_whole_global_batch_reads_what_it_read_before():
    # mini and imagenette_mini (global = micro, one process) keep their sample order exactly
    order = torch.randperm(50, generator=torch.Generator().manual_seed(batching_seed(7, 2)))
    assert torch.equal(epoch_indices(50, 7, 2, True, 0, 1, 10), order)


def batching_seed(seed: int, epoch: int) -> int:
    from tas.data.loader import mix_seed

    return mix_seed(seed, epoch, 0x5EED)


# ------------------------------------------------------------------ accumulation == DDP

N_IMAGES, GLOBAL, MICRO, STEPS = 48, 16, 4, 3
PAIRS = {"kd": ("tiny_vit", "tiny_cnn"), "tas": ("tiny_cnn", "tiny_vit")}  # a BatchNorm student; TAS's assistant


def _train(method: str, world: int, rank: int, out: Path) -> dict[str, torch.Tensor]:
    """One epoch of STEPS optimizer steps through the trainer's own fit(); the final student weights."""
    from tas.distillers import build_distiller
    from tas.engine import devices
    from tas.engine.distributed import DistContext
    from tas.engine.trainer import TrainJob, fit, make_criterion
    from tas.models import create_model

    torch.set_num_threads(1)
    teacher_id, student_id = PAIRS[method]
    # SGD: Adam divides by sqrt(v), which turns float noise in a gradient that is zero in exact arithmetic
    # (the key bias of attention) into a full-size step, so its parameters would differ by more than rounding.
    recipe = replace(CFG.recipes["mini"], optimizer="sgd", momentum=0.9, epochs=1, global_batch=GLOBAL,
                     micro_batch=MICRO, warmup_epochs=0, clip_grad=1.0, lr=0.05)
    plan = batching.plan(recipe, world)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_IMAGES, 32, 32, 3), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (N_IMAGES,), generator=gen)
    augment = AugmentSpec(train="none", image_size=32)  # augmentation draws are per rank; the arithmetic is not
    common = dict(augment=augment, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu", seed=0, rank=rank, world_size=world)
    train = InMemoryLoader(images, labels, plan.micro_batch, True, global_batch=plan.global_batch, **common)
    test = InMemoryLoader(images[:8], labels[:8], 8, False, **common)
    torch.manual_seed(0)
    teacher = create_model(CFG.model(teacher_id), 10, 32)
    student = create_model(CFG.model(student_id), 10, 32)
    distiller = build_distiller(CFG.method(method).type, student, teacher, CFG.method(method).options, 10,
                                make_criterion(recipe.label_smoothing))
    distiller.initialise(0)
    placement = devices.resolve(CFG.runtime, False, 1)
    fit(TrainJob(distiller, recipe, train, test, placement, out, 0, 10, {}, progress=False,
                 ctx=DistContext(rank, world, rank), accumulation=plan.accumulation))
    assert len(train) == STEPS * plan.accumulation
    # parameters, not buffers: BatchNorm's running statistics are rank 0's under DDP, every micro-batch's here
    return {k: v.detach().clone() for k, v in distiller.named_parameters() if not k.startswith("teacher")}


def _rank(methods: list[str], rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for method in methods:  # one after the other in one process group, each from its own seeds
            state = _train(method, world, rank, Path(out) / method / "run")
            # a file: tensors in a queue die with their process
            torch.save(state, Path(out) / method / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_states(tmp_path_factory) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
    """Every method's final student weights on each of the GLOBAL // MICRO gloo processes. One group of spawned
    processes trains all the methods (each a fresh spawn imports torch, timm and tas: seconds of CPU apiece)."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    methods = sorted(PAIRS)
    for method in methods:
        (out / method).mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    world = GLOBAL // MICRO
    procs = [ctx.Process(target=_rank, args=(methods, rank, world, port, str(out))) for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    return {m: {rank: torch.load(out / m / f"rank{rank}.pt") for rank in range(world)} for m in methods}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PAIRS))
def test_accumulation_equals_ddp(method, ddp_states, tmp_path):
    single = _train(method, 1, 0, tmp_path / "single")
    world = GLOBAL // MICRO
    states = ddp_states[method]
    ddp = states[0]
    trained = list(single)
    assert trained and set(ddp) == set(single)
    for key in trained:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
        torch.testing.assert_close(states[world - 1][key], ddp[key], rtol=0, atol=0, msg=key)  # replicas agree
    init = _initial(method)
    moved = sum(not torch.equal(init[k], single[k]) for k in trained if k in init)
    assert moved > len(trained) // 2  # the steps really trained: equality is not two untouched copies


def _initial(method: str) -> dict[str, torch.Tensor]:
    from tas.distillers import build_distiller
    from tas.engine.trainer import make_criterion
    from tas.models import create_model

    teacher_id, student_id = PAIRS[method]
    torch.manual_seed(0)
    teacher = create_model(CFG.model(teacher_id), 10, 32)
    student = create_model(CFG.model(student_id), 10, 32)
    distiller = build_distiller(CFG.method(method).type, student, teacher, CFG.method(method).options, 10,
                                make_criterion(0.1))
    distiller.initialise(0)
    return {k: v.detach().clone() for k, v in distiller.named_parameters()}
