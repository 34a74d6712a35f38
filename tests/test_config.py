"""params.yaml loading, overrides and the one-line errors users see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tas.config import apply_override, load_config
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"


def _params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_shipped_params_are_valid_and_frozen():
    cfg = load_config(PARAMS)
    assert cfg.selected == ("mini",)
    mini = cfg.experiment("mini")
    assert [p.id for p in mini.pairs] == ["tiny_cnn-tiny_vit", "tiny_vit-tiny_mlp", "tiny_cnn-tiny_mlp"]
    assert len(cfg.experiment("cifar100").pairs) == 12
    with pytest.raises(AttributeError):
        mini.protocol = "paper"  # frozen dataclass
    with pytest.raises(TypeError):
        cfg.models["new"] = None  # read-only mapping


def test_method_defaults_fill_missing_options():
    cfg = load_config(PARAMS)
    tas = cfg.method("tas")
    assert tas.options["pairs"] == ("ts", "ta", "as") or list(tas.options["pairs"]) == ["ts", "ta", "as"]
    assert tas.options["proj_dim"] == 256
    assert cfg.method("tas_fusion_a").options["fusion"] == "A"
    assert cfg.method("kd").options["T"] == 1.0  # the OFA harness's KD temperature (docs/protocol.md)


@pytest.mark.parametrize("override, key, expected", [
    ("recipes.mini.epochs=2", ("recipes", "mini", "epochs"), 2),
    ("recipes.mini.lr=0.1", ("recipes", "mini", "lr"), 0.1),
    ("runtime.compile=true", ("runtime", "compile"), True),
    ("experiments.mini.seeds=[0, 1]", ("experiments", "mini", "seeds"), [0, 1]),
    ("methods.kd.T=2", ("methods", "kd", "T"), 2),
])
def test_set_overrides_are_typed(override, key, expected):
    raw = yaml.safe_load(PARAMS.read_text())
    apply_override(raw, override)
    node = raw
    for part in key:
        node = node[part]
    assert node == expected and type(node) is type(expected)


@pytest.mark.parametrize("override, key, expected", [
    ("runtime.channels_last=on", "channels_last", "on"),    # YAML reads a bare on/off as a boolean
    ("runtime.channels_last=off", "channels_last", "off"),
    ("runtime.channels_last=auto", "channels_last", "auto"),
    ("runtime.amp=off", "amp", "off"),
    ("runtime.amp=bf16", "amp", "bf16"),
])
def test_runtime_switches_take_on_and_off_as_words(override, key, expected):
    assert getattr(load_config(PARAMS, [override]).runtime, key) == expected


def test_runtime_switch_words_in_a_params_file(tmp_path):
    text = (PARAMS.read_text().replace("  amp: auto ", "  amp: off ")
            .replace("  channels_last: auto ", "  channels_last: on "))
    assert "amp: off" in text and "channels_last: on" in text
    (tmp_path / "params.yaml").write_text(text)
    runtime = load_config(tmp_path / "params.yaml").runtime
    assert (runtime.amp, runtime.channels_last) == ("off", "on")


def test_amp_true_is_ambiguous_and_refused():
    with pytest.raises(TasError, match=r"runtime.amp: True is not allowed \(YAML reads a bare on/off/yes/no as "
                                       r"true/false\); use one of: auto, bf16, off$"):
        load_config(PARAMS, ["runtime.amp=true"])


def test_overrides_reach_the_frozen_config():
    cfg = load_config(PARAMS, ["recipes.mini.epochs=1", "experiments.mini.seeds=[3]"])
    assert cfg.recipes["mini"].epochs == 1
    assert cfg.experiment("mini").seeds == (3,)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["recipes"]["mini"].update(epochs="ten"), "recipes.mini.epochs: expected integer"),
    (lambda r: r["recipes"]["mini"].update(lr=-1), "recipes.mini.lr: -1 is out of range"),
    (lambda r: r["recipes"]["mini"].update(optimiser="sgd"), "unknown key recipes.mini.optimiser; allowed keys here:"),
    (lambda r: r.update(experiment="nope"), "experiment: unknown experiment 'nope'; choose one of: mini"),
    (lambda r: r["experiments"]["mini"].update(methods=["kd", "magic"]),
     "experiments.mini.methods: unknown method 'magic'"),
    (lambda r: r["experiments"]["mini"]["pairs"].append({"teacher": "tiny_cnn", "student": "resnet999"}),
     "pairs[3].student: unknown model 'resnet999'"),
    (lambda r: r["experiments"]["mini"]["pairs"].append({"teacher": "swin_t", "student": "r18"}),
     "is not among this experiment's teachers"),
    (lambda r: r["models"].update({"../evil": {"timm": "resnet18", "family": "cnn", "name": "x"}}),
     "'../evil' is not a path-safe id"),
    (lambda r: r["models"]["r18"].update(family="transformer"),
     "models.r18.family: 'transformer' is not allowed; use one of: cnn, vit, swin, mlp"),
    (lambda r: r["methods"]["kd"].update(Temp=2), "methods.kd.Temp: unknown option for a kd method; allowed:"),
    (lambda r: r["methods"]["kd"].update(T="hot"), "methods.kd.T: expected number, got str 'hot'"),
    (lambda r: r["runtime"].update(upsample_on="gpu"),
     "runtime.upsample_on: 'gpu' is not allowed; use one of: auto, device, workers"),
    (lambda r: r["experiments"]["mini"]["pairs"].append({"teacher": "tiny_cnn", "student": "tiny_vit"}),
     "pair tiny_cnn-tiny_vit is listed twice"),
])
def test_bad_params_give_one_clear_line(tmp_path, edit, message):
    path = _params(tmp_path, edit)
    with pytest.raises(TasError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text


def test_bad_override_syntax(tmp_path):
    with pytest.raises(TasError, match="expected key.path=value"):
        load_config(PARAMS, ["recipes.mini.epochs"])


def test_missing_params_file(tmp_path):
    with pytest.raises(TasError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("experiment: mini\nmodels: [unclosed\n")
    with pytest.raises(TasError, match="not valid YAML at line"):
        load_config(path)


def test_cli_exit_code_two_and_nothing_written(tmp_path):
    path = _params(tmp_path, lambda r: r["recipes"]["mini"].update(epochs="ten"))
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "tas", "train-teacher", "--params", str(path), "--experiment", "mini",
                           "--teacher", "tiny_cnn", "--set", f"paths.results={results}"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "recipes.mini.epochs" in lines[0]
    assert not results.exists()


def test_yaml_is_never_evaluated_as_code(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text() + "\nevil: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(TasError):
        load_config(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_teacher_free_method_that_builds_something_first_is_refused(tmp_path, monkeypatch):
    """prepare-run builds per teacher-student pair: a method that declares both is a plugin bug, named."""
    import dataclasses

    from tas.distillers import registry

    original = registry.declaration
    monkeypatch.setattr(registry, "declaration", lambda name: dataclasses.replace(original(name), built_first="probe")
                        if name == "scratch" else original(name))
    with pytest.raises(TasError, match=r"methods\.scratch\.type: .*built_first = 'probe' but needs no teacher"):
        load_config(PARAMS)
