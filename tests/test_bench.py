"""`tas.bench` with tiny settings: the JSON it writes has the documented structure and positive
numbers. No wall-clock assertions (timings on a shared CI machine mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tas import bench
from tas.bench import machine, pipeline, step, timing
from tas.bench.data import bench_data
from tas.config import load_config
from tas.data import sources
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "params.yaml", ["runtime.threads=1"])


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    monkeypatch.setenv("TAS_BENCH_RETRIES", "0")  # a busy CI machine must not make the test wait
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _args(out_dir: Path, **kw) -> SimpleNamespace:
    base = dict(experiment="mini", pair=None, what="step", methods="scratch,kd,tas", batch_size=8, steps=1,
                windows=1, output_dir=str(out_dir), threads=1)
    base.update(kw)
    return SimpleNamespace(**base)


def test_step_benchmark_json(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TAS_BENCH_VARIANTS", "none")
    written = bench.run_bench(cfg, _args(tmp_path))
    assert len(written) == 1
    path = Path(written[0])
    exp = cfg.experiment("mini")
    pair = exp.pairs[0]
    assert path.parent == tmp_path
    assert path.name.endswith(f"-{cfg.protocol_of(exp).id}-{pair.id}.json")
    assert path.name.startswith(machine.device_slug(torch.device("cpu"), 1) if not torch.cuda.is_available() else "")
    data = json.loads(path.read_text())
    for key in ("device", "versions", "threads", "batch_size", "image_size", "methods", "ratios", "settings",
                "pair", "protocol", "peak_mem_kind", "targets"):
        assert key in data, key
    assert {"torch", "timm", "python"} <= set(data["versions"])
    assert data["batch_size"] == 8 and data["image_size"] == 32 and data["pair"] == pair.id
    assert set(data["methods"]) == {"scratch", "kd", "tas"}
    for method, res in data["methods"].items():
        assert res["images_per_s"] > 0 and res["step_ms_median"] > 0, method
        assert len(res["step_ms_windows"]) == 1 and all(v > 0 for v in res["step_ms_windows"])
        assert res["peak_mem_mb"] >= 0 and isinstance(res["extra_params"], int)
    assert data["methods"]["scratch"]["extra_params"] == 0 and data["methods"]["kd"]["extra_params"] == 0
    assert data["methods"]["tas"]["extra_params"] > 0  # L2G + projection heads
    assert set(data["ratios"]) == {"tas/kd", "tas/scratch"}  # ofa/kd needs ofa
    assert all(v > 0 for v in data["ratios"].values())
    assert data["target_tas_over_kd_met"] in (True, False)
    assert data["settings"]["steps"] == 1 and data["settings"]["windows"] == 1
    proj = data["projection"]  # mini: 1600 synthetic training images, the mini recipe's epochs
    assert proj["train_images"] == 1600 and proj["epochs"] == cfg.student_recipe(exp, pair.student).epochs
    for method, res in data["methods"].items():
        assert proj["methods"][method]["epoch_s"] == pytest.approx(1600 / res["images_per_s"], rel=1e-2)


def test_a_diverged_method_is_not_timed(tmp_path, monkeypatch):
    # T = 1e-45 is positive (check accepts it) but below float32's range: the scaled logits are inf, the
    # KD loss NaN from the first step on.
    monkeypatch.setenv("TAS_BENCH_VARIANTS", "none")
    bad = load_config(ROOT / "params.yaml", ["runtime.threads=1", "methods.kd.T=1.0e-45"])
    with pytest.raises(TasError, match=r"bench: non-finite loss \(loss_kd\)"):
        bench.run_bench(bad, _args(tmp_path, methods="kd"))
    assert not list(tmp_path.iterdir())  # no JSON with meaningless timings


def test_unknown_method_is_one_clear_error(cfg, tmp_path):
    from tas.errors import TasError

    with pytest.raises(TasError, match="unknown method 'nope'"):
        bench.run_bench(cfg, _args(tmp_path, methods="scratch,nope"))


def test_data_benchmark_tiny(cfg, tmp_path):
    path = bench_data(cfg, steps=1, windows=1, threads=1, out_dir=tmp_path, batch_size=8, n_images=32,
                      n_jpegs=16, jpeg_size=16,
                      cases=["synthetic-mini", "cifar-32-crop_flip", "jpeg-folder-32-crop_flip"],
                      measure_reference=False)
    data = json.loads(Path(path).read_text())
    assert data["benchmark"] == "data" and {"torch", "timm", "python"} <= set(data["versions"])
    names = [c["name"] for c in data["cases"]]
    assert names == ["synthetic-mini", "cifar-32-crop_flip", "jpeg-folder-32-crop_flip"]
    for case in data["cases"]:
        assert case["augment"]["image_size"] == 32
        for run in case["runs"]:
            assert run["images_per_s"] > 0 and run["batch_ms_median"] > 0
    folder = data["cases"][2]
    assert [r["num_workers"] for r in folder["runs"]] == [0, 2]


def test_data_ratio_reads_the_step_json(cfg, tmp_path, monkeypatch):
    """The mini case's ratio comes from the scratch step of the step JSON beside it."""
    monkeypatch.setenv("TAS_BENCH_VARIANTS", "none")
    bench.run_bench(cfg, _args(tmp_path, methods="scratch"))
    path = bench_data(cfg, steps=1, windows=1, threads=1, out_dir=tmp_path, batch_size=8, n_images=32,
                            cases=["synthetic-mini"], measure_reference=False)
    case = json.loads(Path(path).read_text())["cases"][0]
    assert case["step_reference"]["images_per_s"] > 0
    assert case["step_reference"]["source"].endswith(".json")
    assert case["runs"][0]["ratio_to_step"] > 0 and case["runs"][0]["target_met"] in (True, False)


def test_projection_of_a_300_epoch_cifar_run():
    cifar = load_config(ROOT / "params.yaml")
    exp = cifar.experiment("cifar100")
    # the full set, before prepare-data
    assert sources.train_images(cifar.protocol_of(exp).dataset, cifar.data_root) == 50_000
    proj = step.projection({"tas": {"images_per_s": 5000.0}, "broken": {"error": "x"}}, 50_000, 300)
    assert proj["methods"] == {"tas": {"epoch_s": 10.0, "run_h": pytest.approx(300 * 10 / 3600, abs=1e-3)}}
    assert step.projection({"tas": {"images_per_s": 1.0}}, None, 300)["train_images"] is None


def test_ratios_and_slug():
    per = {"kd": {"step_ms_median": 10.0}, "tas": {"step_ms_median": 12.5}, "scratch": {"step_ms_median": 5.0}}
    assert step.ratios(per) == {"tas/kd": 1.25, "tas/scratch": 2.5}
    slug = machine.device_slug(torch.device("cpu"), 2)
    assert slug.startswith("cpu-") and slug.endswith("-2t") and slug == slug.lower() and " " not in slug


def test_copy_checkout_takes_tracked_files_only(tmp_path):
    dest = tmp_path / "copy"
    n = pipeline.copy_checkout(ROOT, dest)
    assert n > 10 and (dest / "params.yaml").is_file() and (dest / "tas" / "bench" / "step.py").is_file()
    assert not (dest / ".venv").exists() and not (dest / "results").exists() and not (dest / "data").exists()


def test_snakemake_job_times_reads_benchmark_tsvs(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, secs in (("distill/mini/a-b/kd/seed0.tsv", "12.5"), ("distill/mini/a-b/tas/seed0.tsv", "20.0"),
                      ("train_teacher/mini/a.tsv", "30.0")):
        path = tmp_path / "benchmarks" / "snakemake" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{secs}\t0:00:12\t300.1\t900\t-\t-\t1\t2\t95\t11.0\n")
    times = pipeline.snakemake_job_times(tmp_path)
    assert times["per_rule"]["distill"] == {"jobs": 2, "wall_s": 32.5, "cpu_s": 22.0}
    assert times["per_job"][0] == {"rule": "train_teacher", "job": "mini/a", "wall_s": 30.0, "cpu_s": 11.0,
                                   "max_rss_mb": 300.1}
    assert times["sum_job_wall_s"] == 62.5


def test_a_window_times_its_last_calls():
    """time_loader counts the images of a window's last `number` fetches: the Timer's own warm-up calls
    (max(number // 100, 2)) come first and are not timed."""
    calls = []

    def call():
        calls.append(1)
        time.sleep(0.002)

    per_call = timing.window_s(call, 5)
    assert len(calls) == 5 + 2
    assert per_call >= 0.002


class _Batches:
    """A loader as time_loader sees it (set_epoch, iteration); the last batch of an epoch is short."""

    def __init__(self, sizes):
        self.sizes = sizes

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        for n in self.sizes:
            time.sleep(0.002)
            yield torch.zeros(n, 1), torch.zeros(n)


def test_data_throughput_counts_the_timed_batches_only():
    from tas.bench.data import time_loader

    res = time_loader(_Batches([8, 8, 1]), torch.device("cpu"), batches=3, windows=1, warmup=2)
    # fetches: 8, 8 (warm-up), 1, 8 (the Timer's warm-up), then 8, 1, 8 timed: 17 images in 3 batch times
    assert res["images_per_s"] * 3 * res["batch_ms_median"] / 1000 == pytest.approx(17, rel=1e-3)
    assert res["batches_per_window"] == 3 and res["warmup_s"] > 0


def test_the_step_is_the_one_fit_builds(cfg):
    from tas.engine import devices
    from tas.engine.trainer import TrainStep

    exp = cfg.experiment("mini")
    pair = exp.pairs[0]
    recipe = cfg.student_recipe(exp, pair.student)
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", 1)
    job = step.MethodStep(cfg, exp, pair, "kd", 4, placement)
    assert type(job.train_step) is TrainStep and job.train_step.step_fn is job.distiller
    assert (job.train_step.ema is not None) == bool(recipe.ema_decay)
    assert job.train_step.clip_grad == recipe.clip_grad
    group = job.train_step.optimizer.param_groups[0]
    assert group["weight_decay"] in (recipe.weight_decay, 0.0)  # timm keeps norms and biases out of decay
    fused = step.MethodStep(cfg, exp, pair, "kd", 4, placement, variant="fused_optimizer")
    assert fused.train_step.optimizer.defaults.get("fused") is True
    assert not job.train_step.optimizer.defaults.get("fused")


def test_unknown_benchmark_is_one_clear_error(cfg, tmp_path):
    with pytest.raises(TasError, match="bench --what 'nope' unknown"):
        bench.run_bench(cfg, _args(tmp_path, what="nope"))


def test_the_bench_package_loads_no_torch_until_a_benchmark_runs():
    code = "import sys, tas.bench; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
