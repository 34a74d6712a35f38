"""Teachers as the paper had them: downloaded checkpoints (file:// and a local HTTP server, no network),
timm 0.6.5 layouts through timm's own filters, timm's pretrained weights from a local file, the
untrained-teacher and head rules, and the fixed EMA rule of the reported student."""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import argparse
import http.server
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch

import tas.models  # noqa: F401  (registers our timm entry points)
from tas.config import ModelSpec, load_config
from tas.engine.trainer import best_epoch, reported_accuracy
from tas.errors import TasError
from tas.models import create_model
from tas.models.download import cache_path, fetch, file_sha256, resolve_checkpoint
from tas.models.weights import load_teacher_checkpoint, load_weights, pretrained_head_note

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ------------------------------------------------------------------------------------- download


def _source(tmp_path: Path, payload: bytes = b"weights" * 1000) -> tuple[Path, str]:
    src = tmp_path / "release" / "teacher_cifar100.pth"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    return src, src.as_uri()


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob(".*"))


def test_download_records_sha256_then_verifies_against_it(tmp_path, capsys):
    src, url = _source(tmp_path)
    cache = tmp_path / "data" / "checkpoints"
    path = fetch(url, cache)
    assert path == cache_path(url, cache) and path.parent.parent == cache and path.name == src.name
    assert path.read_bytes() == src.read_bytes()
    digest = file_sha256(src)
    assert path.with_name(f"{src.name}.sha256").read_text().split()[0] == digest
    assert f"sha256: {digest}" in capsys.readouterr().err  # printed so the user can pin it
    assert fetch(url, cache) == path and capsys.readouterr().err == ""  # cached: no second download

    # The release changes under the same URL: the recorded hash refuses the new file.
    path.unlink()
    src.write_bytes(b"other weights")
    with pytest.raises(TasError, match=r"checksum mismatch .* expected " + digest):
        fetch(url, cache)
    assert not path.exists() and _leftovers(path.parent) == [], _leftovers(path.parent)


def test_pinned_sha256_mismatch_deletes_the_download(tmp_path):
    src, url = _source(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(TasError) as err:
        fetch(url, cache, sha256="0" * 64)
    message = str(err.value)
    assert ("\n" not in message and "checksum mismatch" in message and "deleted" in message
            and file_sha256(src) in message)
    path = cache_path(url, cache)
    assert not path.exists() and not path.with_name(f"{src.name}.sha256").exists()
    assert _leftovers(path.parent) == []
    assert fetch(url, cache, sha256=file_sha256(src)).read_bytes() == src.read_bytes()  # the right pin passes


def test_cached_file_that_no_longer_matches_its_pin_is_downloaded_again(tmp_path):
    src, url = _source(tmp_path)
    cache = tmp_path / "cache"
    path = fetch(url, cache)
    path.write_bytes(b"corrupted on disk")
    assert fetch(url, cache, sha256=file_sha256(src)).read_bytes() == src.read_bytes()


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces more bytes than it sends, then closes: a connection that drops mid-download."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 4096)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):  # keep pytest's output clean
        pass


def test_interrupted_download_leaves_nothing_and_a_rerun_restarts_cleanly(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "cache"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/teacher_cifar100.pth"
        with pytest.raises(TasError, match=r"interrupted after 4096 of 100000 bytes.*rerun"):
            fetch(url, cache)
    finally:
        server.shutdown()
        server.server_close()
    assert not cache_path(url, cache).exists() and _leftovers(cache_path(url, cache).parent) == []

    # A download killed outright (no exception handler ran) leaves its temp file: the next run removes it.
    src, file_url = _source(tmp_path)
    stale = cache_path(file_url, cache).with_name(f".{src.name}.k1ll3d.tmp")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    assert fetch(file_url, cache).read_bytes() == src.read_bytes()
    assert not stale.exists() and _leftovers(stale.parent) == []


def test_two_urls_with_one_file_name_are_kept_apart(tmp_path):
    first, url_a = _source(tmp_path / "a", b"teacher A")
    second, url_b = _source(tmp_path / "b", b"teacher B")
    assert first.name == second.name
    cache = tmp_path / "cache"
    assert fetch(url_a, cache).read_bytes() == b"teacher A"
    assert fetch(url_b, cache).read_bytes() == b"teacher B"


def test_unreachable_url_is_one_line(tmp_path):
    with pytest.raises(TasError) as err:
        fetch((tmp_path / "missing.pth").as_uri(), tmp_path / "cache")
    assert "\n" not in str(err.value) and "cannot download" in str(err.value) and "checkpoint:" in str(err.value)


def test_local_checkpoint_is_checked_against_a_pinned_sha256(tmp_path):
    src, _ = _source(tmp_path)
    assert resolve_checkpoint(str(src), tmp_path / "cache", file_sha256(src)) == src
    with pytest.raises(TasError, match="has sha256"):
        resolve_checkpoint(str(src), tmp_path / "cache", "f" * 64)
    with pytest.raises(TasError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope.pth"), tmp_path / "cache")


# ----------------------------------------------------------------------- old checkpoint layouts


def _spec(timm_name: str, family: str) -> ModelSpec:
    return ModelSpec(id="m", timm=timm_name, family=family, name="M")


def _to_timm065_swin(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm 1.0 Swin -> timm 0.6.5 layout: a stage's patch merging at the END of the previous stage,
    `head` a bare Linear, and the relative-position index / attention mask buffers saved."""
    old = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        old[key.replace("head.fc.", "head.")] = value
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_index"):
            old[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if getattr(module, "attn_mask", None) is not None:
            old[f"{name}.attn_mask"] = module.attn_mask.clone()
    return old


def _logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, 32, 32))


@pytest.fixture(scope="module")
def swin_065(tmp_path_factory):
    """A 100-class tiny Swin saved as OFA's harness (timm 0.6.5 CheckpointSaver) would have saved it."""
    torch.manual_seed(1)
    model = create_model(_spec("tas_tiny_swin", "swin"), 100, 32).model
    assert any(k.startswith("layers.1.downsample") for k in model.state_dict())  # the layout differs
    old = _to_timm065_swin(model.state_dict(), model)
    assert "layers.0.downsample.reduction.weight" in old and "head.weight" in old
    path = tmp_path_factory.mktemp("ofa") / "swin_tiny_cifar100.pth"
    torch.save({"epoch": 299, "arch": "tas_tiny_swin", "state_dict": old, "version": 2, "metric": 89.26,
                "args": argparse.Namespace(model="tas_tiny_swin", lr=0.01)}, path)
    return model, path


def test_timm065_swin_loads_through_timms_filter(swin_065):
    reference, path = swin_065
    fresh = create_model(_spec("tas_tiny_swin", "swin"), 100, 32).model
    with pytest.raises(TasError, match="keys for SwinTransformer|does not fit"):
        load_weights(fresh, path)  # without timm's filter the old layout cannot load
    assert load_teacher_checkpoint(fresh, path, trained=False) is None
    assert torch.allclose(_logits(fresh), _logits(reference), atol=1e-5)


def test_head_of_other_classes_is_an_error_untrained_and_replaced_when_trained(swin_065):
    reference, path = swin_065
    model = create_model(_spec("tas_tiny_swin", "swin"), 10, 32).model
    with pytest.raises(TasError) as err:
        load_teacher_checkpoint(model, path, trained=False)
    message = str(err.value)
    assert "\n" not in message and "100 classes, the model 10" in message and "0 epochs" in message
    assert load_teacher_checkpoint(model, path, trained=True) == "replaced head: 100 -> 10 classes"
    ref = reference.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items() if not k.startswith("head."))
    with pytest.raises(TasError, match="replace_head: true"):
        load_teacher_checkpoint(model, path, trained=True, replace_head=False)


@pytest.mark.parametrize("timm_name,family", [("tas_tiny_vit", "vit"), ("tas_tiny_mixer", "mlp"),
                                              ("tas_tiny_convnext", "cnn"), ("tas_tiny_resnet", "cnn")])
def test_other_families_load_through_their_module_filter(timm_name, family, tmp_path):
    # ViT, Mixer and ConvNeXt kept their key layout from timm 0.6.5 to 1.0: their filters must keep it.
    torch.manual_seed(2)
    reference = create_model(_spec(timm_name, family), 100, 32).model
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    fresh = create_model(_spec(timm_name, family), 100, 32).model
    assert load_teacher_checkpoint(fresh, path, trained=False) is None
    assert torch.allclose(_logits(fresh), _logits(reference), atol=1e-5)


# --------------------------------------------------------------------------- timm's pretrained


def test_pretrained_file_loads_timms_weights_and_replaces_the_head(tmp_path):
    # The tiny Swin's pretrained_cfg says 100 classes: a state dict of a fresh 100-class model stands in
    # for the weights timm would fetch from the hub.
    torch.manual_seed(3)
    source = timm.create_model("tas_tiny_swin", num_classes=100)
    path = tmp_path / "tas_tiny_swin.pth"
    torch.save(source.state_dict(), path)
    view = create_model(_spec("tas_tiny_swin", "swin"), 10, 32, pretrained=True, pretrained_file=str(path))
    src = source.state_dict()
    own = view.model.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in own.items() if not k.startswith("head."))
    assert own["head.fc.weight"].shape[0] == 10
    assert pretrained_head_note("tas_tiny_swin", 10, trained=True) == "replaced head: 100 -> 10 classes"
    assert pretrained_head_note("tas_tiny_swin", 100, trained=False) is None
    with pytest.raises(TasError, match="0 epochs"):
        pretrained_head_note("tas_tiny_swin", 10, trained=False)
    with pytest.raises(TasError, match="pretrained_file"):
        create_model(_spec("tas_tiny_swin", "swin"), 10, 32, pretrained=True,
                     pretrained_file=str(tmp_path / "none.pth"))


# ------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("overrides,fragments", [
    (["experiments.mini.teachers.tiny_cnn.epochs=0"],
     ["experiments.mini.teachers.tiny_cnn", "untrained", "checkpoint", "pretrained: true", "epochs > 0"]),
    (["experiments.mini.teachers.tiny_cnn.pretrained_file=w.pth"], ["set pretrained: true"]),
    (["experiments.mini.teachers.tiny_cnn.sha256=" + "a" * 64], ["sha256", "checkpoint"]),
    (["experiments.mini.teachers.tiny_cnn.checkpoint=w.pth", "experiments.mini.teachers.tiny_cnn.pretrained=true"],
     ["not both"]),
    (["experiments.mini.teachers.tiny_cnn.sha256=abc"], ["sha256"]),
])
def test_teacher_settings_are_checked_at_load(overrides, fragments):
    with pytest.raises(TasError) as err:
        load_config(PARAMS, overrides)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_paper_experiments_use_released_or_pretrained_teachers_untrained():
    cfg = load_config(PARAMS)
    for exp_id in ("cifar100", "ablation"):
        exp = cfg.experiment(exp_id)
        for teacher_id, spec in exp.teachers.items():
            assert spec.checkpoint.startswith("https://github.com/Hao840/OFAKD/releases/download/checkpoint-cifar100/")
            assert cfg.teacher_recipe(exp, teacher_id).epochs == 0
    for spec in cfg.experiment("imagenet").teachers.values():
        assert spec.pretrained and spec.epochs == 0 and spec.checkpoint is None
    mini = cfg.experiment("mini")
    assert all(cfg.teacher_recipe(mini, t).epochs > 0 for t in mini.teachers)  # trained here, so still valid


def test_dataset_mean_and_std_reach_the_data_spec():
    cfg = load_config(PARAMS, ["datasets.synthetic.mean=[0.4, 0.45, 0.5]", "datasets.synthetic.std=[0.2, 0.25, 0.3]"])
    assert cfg.datasets["synthetic"].mean == (0.4, 0.45, 0.5) and cfg.datasets["synthetic"].std == (0.2, 0.25, 0.3)
    with pytest.raises(TasError, match=r"datasets\.imagenet\.mean"):
        load_config(PARAMS, ["datasets.imagenet.mean=[0.4, 0.45]"])
    with pytest.raises(TasError, match=r"datasets\.imagenet\.std"):
        load_config(PARAMS, ["datasets.imagenet.std=[0.2, 0.0, 0.3]"])


# ---------------------------------------------------------------------------- fixed EMA rule


def test_reported_student_is_fixed_by_rule_not_by_test_score():
    row = {"test_top1": 80.0, "test_top5": 95.0, "ema_top1": 60.0, "ema_top5": 90.0}
    assert reported_accuracy(row, ema_on=True) == {"top1": 60.0, "top5": 90.0, "weights": "ema",
                                                   "model_top1": 80.0, "model_top5": 95.0}
    plain = {"test_top1": 50.0, "test_top5": 70.0}
    assert (reported_accuracy(plain, ema_on=False)["top1"] == 50.0
            and reported_accuracy(plain, ema_on=False)["weights"] == "model")


def test_best_epoch_is_recorded_beside_the_last_not_instead():
    # OFA's train.py reports the best test top-1 over epochs; we keep the last epoch and label the best.
    history = [{"epoch": 1, "test_top1": 40.0, "ema_top1": 10.0}, {"epoch": 2, "test_top1": 55.0, "ema_top1": 30.0},
               {"epoch": 3, "test_top1": 55.0, "ema_top1": 35.0}, {"epoch": 4, "test_top1": 50.0, "ema_top1": 33.0}]
    assert best_epoch(history, ema_on=False) == {"best_epoch_top1": 55.0, "best_epoch": 2}  # the first of equals
    assert best_epoch(history, ema_on=True) == {"best_epoch_top1": 35.0, "best_epoch": 3}  # of the reported weights
    assert reported_accuracy(history[-1] | {"test_top5": 0.0}, ema_on=False)["top1"] == 50.0


# -------------------------------------------------------------------------- the CLI, end to end


def _tas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tas", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("teachers")
    common = ["--set", f"paths.data={root / 'data'}", "--set", "datasets.synthetic.train_size=400",
              "--set", "datasets.synthetic.test_size=200", "--set", "runtime.progress=false",
              "--set", "recipes.mini_teacher.epochs=1", "--set", "experiments.mini.teachers.tiny_vit.epochs=1"]
    assert _tas("prepare-data", "--dataset", "synthetic", *common).returncode == 0
    # A 100-class checkpoint of the mini teacher's architecture, served by URL.
    torch.manual_seed(4)
    ckpt = root / "release" / "tiny_cnn_100.pth"
    ckpt.parent.mkdir()
    torch.save({"state_dict": timm.create_model("tas_tiny_resnet", num_classes=100).state_dict()}, ckpt)
    return root, common + ["--set", f"experiments.mini.teachers.tiny_cnn.checkpoint={ckpt.as_uri()}"]


def test_wrong_head_with_zero_epochs_stops_before_writing(mini):
    root, common = mini
    results = root / "zero"
    out = _tas("train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn", *common,
               "--set", f"paths.results={results}", "--set", "experiments.mini.teachers.tiny_cnn.epochs=0")
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "100 classes, the model 10" in last and "0 epochs" in last
    assert not (results / "mini" / "teachers" / "tiny_cnn" / "model.pt").exists()


def test_url_checkpoint_downloads_and_a_replaced_head_is_logged_and_trained(mini):
    root, common = mini
    results = root / "finetune"
    out = _tas("train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn", *common, "--set",
               f"paths.results={results}")
    assert out.returncode == 0, out.stderr
    cached = cache_path((root / "release" / "tiny_cnn_100.pth").as_uri(), root / "data" / "checkpoints")
    assert cached.is_file() and (cached.parent / "tiny_cnn_100.pth.sha256").is_file()
    job = results / "mini" / "teachers" / "tiny_cnn"
    assert "replaced head: 100 -> 10 classes" in (job / "log.txt").read_text()
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["head"] == "replaced head: 100 -> 10 classes" and metrics["checkpoint_sha256"] == file_sha256(cached)


def test_ema_student_is_reported_and_saved_when_ema_is_on(mini):
    root, common = mini
    results = root / "ema"
    args = ["--experiment", "mini", "--teacher", "tiny_vit", *common, "--set", f"paths.results={results}",
            "--set", "recipes.mini_teacher.ema_decay=0.9"]
    out = _tas("train-teacher", *args)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((results / "mini" / "teachers" / "tiny_vit" / "metrics.json").read_text())
    assert metrics["weights"] == "ema" and metrics["top1"] == metrics["ema_top1"]
    assert {"model_top1", "model_top5", "ema_top5"} <= set(metrics)
    out = _tas("evaluate", *args)
    assert out.returncode == 0, out.stderr
    evaluated = json.loads((results / "mini" / "eval" / "teachers" / "tiny_vit.json").read_text())
    assert abs(evaluated["top1"] - metrics["ema_top1"]) < 1e-6  # model.pt holds the EMA weights


@pytest.mark.slow
@pytest.mark.parametrize("teacher_id", ["swin_t", "vit_s", "mixer_b16", "convnext_t"])
def test_ofa_teacher_architectures_load_from_their_timm065_layout(teacher_id, tmp_path):
    # The four released teachers' own architectures at 224 px, 100 classes, saved in the old layout.
    cfg = load_config(PARAMS)
    spec = cfg.model(teacher_id)
    torch.manual_seed(5)
    reference = create_model(spec, 100, 224).model
    state = reference.state_dict()
    if spec.family == "swin":
        state = _to_timm065_swin(state, reference)
    path = tmp_path / f"{teacher_id}_cifar100.pth"
    torch.save({"state_dict": state, "args": argparse.Namespace(model=spec.timm)}, path)
    fresh = create_model(spec, 100, 224).model
    assert load_teacher_checkpoint(fresh, path, trained=False) is None
    ref = reference.state_dict()
    assert all(torch.equal(value, ref[key]) for key, value in fresh.state_dict().items())


def test_check_refuses_an_untrained_teacher_with_one_line():
    out = _tas("check", "--set", "experiments.mini.teachers.tiny_vit.epochs=0")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "experiments.mini.teachers.tiny_vit: would be used untrained" in lines[0]
