"""Distillers: every method id of params.yaml takes one SGD step on tiny pairs of different families,
keeps the teacher frozen, trains what it adds, and its option switches change the loss terms.

Models are the `mini` protocol's tiny members at 32 px, built fresh per test (a few ms each), so
steps never leak between tests.
"""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from tas.config import load_config
from tas.distillers import build_distiller, method_defaults
from tas.engine.trainer import make_criterion
from tas.errors import TasError
from tas.models import create_model

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")
NUM_CLASSES = 10
BATCH = 4

# teacher -> student pairs of different families; the first is used for every method.
PAIRS = [("tiny_cnn", "tiny_vit"), ("tiny_vit", "tiny_cnn"), ("tiny_cnn", "tiny_mlp"), ("tiny_convnext", "tiny_swin"),
         ("tiny_swin", "tiny_mlp")]
METHODS = list(CFG.methods)
ADDS_NOTHING = {"scratch", "kd", "dkd", "dist"}
ADDS_MODULES = {"fitnet", "ofa", "rsd", "tas"}


pytestmark = pytest.mark.usefixtures("one_thread")


def fresh(model_id: str, seed: int):
    torch.manual_seed(seed)
    view = create_model(CFG.models[model_id], NUM_CLASSES, 32)
    # timm zero-initialises Mixer heads: nothing upstream of them would get a gradient on step 1.
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, param in view.model.named_parameters():
            if not name.endswith("bias") and not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return view


def build(method_id: str, teacher_id: str, student_id: str, **overrides):
    method = CFG.methods[method_id]
    teacher, student = fresh(teacher_id, 0), fresh(student_id, 1)
    distiller = build_distiller(method.type, student, teacher, {**method.options, **overrides}, NUM_CLASSES,
                                make_criterion(0.1))
    return distiller, teacher, student


def batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 3, 32, 32, generator=gen), torch.arange(BATCH) % NUM_CLASSES


def soft_labels(y: torch.Tensor, lam: float = 0.7, smoothing: float = 0.1) -> torch.Tensor:
    """What timm's Mixup hands the trainer: a (B, C) mix of smoothed one-hots of y and y.flip(0)."""
    off, on = smoothing / NUM_CLASSES, 1 - smoothing + smoothing / NUM_CLASSES
    one = F.one_hot(y, NUM_CLASSES).float() * (on - off) + off
    return lam * one + (1 - lam) * one.flip(0)


def loss_terms(out: dict) -> dict:
    return {k: v for k, v in out.items() if k.startswith("loss_")}


def snapshot(params) -> dict:
    return {name: p.detach().clone() for name, p in params}


def added_modules(distiller) -> list[torch.nn.Module]:
    """The modules a method adds (projectors, heads, L2G): its children other than the student and the
    teacher that hold a parameter of neither."""
    models = [distiller.student] + ([distiller.teacher] if distiller.teacher is not None else [])
    owned = {id(p) for model in models for p in model.parameters()}
    return [m for name, m in distiller.named_children()
            if name not in ("student", "teacher") and any(id(p) not in owned for p in m.parameters())]


def sgd_step(distiller, x, y):
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.1)
    out = distiller(x, y)
    optimizer.zero_grad()
    sum(loss_terms(out).values()).backward()
    optimizer.step()
    return out


CASES = [(m, *PAIRS[0]) for m in METHODS] + [(m, t, s) for t, s in PAIRS[1:] for m in METHODS
                                             if CFG.methods[m].type in ADDS_MODULES]


@pytest.mark.parametrize("method_id, teacher_id, student_id", CASES, ids=lambda v: v)
def test_one_sgd_step(method_id, teacher_id, student_id):
    distiller, teacher, student = build(method_id, teacher_id, student_id)
    distiller.train()
    uses_teacher = CFG.methods[method_id].type != "scratch"
    assert (distiller.teacher is teacher) == uses_teacher
    if uses_teacher:
        assert not teacher.training and not any(m.training for m in teacher.modules())
    assert student.training
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = snapshot(student.named_parameters())
    added_before = [snapshot(m.named_parameters()) for m in added_modules(distiller)]
    x, y = batch()
    torch.manual_seed(7)  # the same stochastic-depth draws (timm's Swin defaults to drop_path 0.1)
    with torch.no_grad():
        own_logits = student(x).logits

    torch.manual_seed(7)
    out = sgd_step(distiller, x, y)

    assert {"logits", "loss_ce"} <= set(out)
    torch.testing.assert_close(out["logits"].detach(), own_logits, atol=1e-5, rtol=0)  # the student's logits
    terms = loss_terms(out)
    for name, value in terms.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    # the student learns: every tensor that got a non-zero gradient moved (timm's zero-init residual
    # branches legitimately give exact-zero grads to some ResNet tensors on the first step)
    moved = {n: not torch.equal(student_before[n], p) for n, p in student.named_parameters()}
    for name, param in student.named_parameters():
        assert param.grad is not None, name
        if param.grad.abs().sum() > 0:
            assert moved[name], name
    assert sum(moved.values()) >= len(moved) // 2
    assert all(moved[f"model.{n}"] for n, _ in student.model.get_classifier().named_parameters(
        prefix=student.model.pretrained_cfg["classifier"]))
    # what the method adds learns too
    for module, before in zip(added_modules(distiller), added_before):
        assert any(not torch.equal(before[n], p) for n, p in module.named_parameters()), type(module).__name__
    # the teacher does not: bit-identical weights and buffers, no gradients, eval mode
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    if uses_teacher:
        assert not any(p.requires_grad for p in teacher.parameters())
        distiller.eval()
        distiller.train()
        assert not teacher.training and not any(m.training for m in teacher.modules())


@pytest.mark.parametrize("method_id", METHODS)
def test_extra_parameters(method_id):
    distiller, teacher, student = build(method_id, *PAIRS[0])
    extra = distiller.extra_parameters()
    method_type = CFG.methods[method_id].type
    if method_type in ADDS_NOTHING:
        assert extra == 0 and added_modules(distiller) == []
    else:
        assert method_type in ADDS_MODULES and extra > 0
        added = sum(p.numel() for m in added_modules(distiller) for p in m.parameters())
        scale = getattr(distiller, "logit_scale", None)
        assert extra == added + (scale.numel() if scale is not None else 0)
    trainable = distiller.trainable_parameters()
    assert len({id(p) for p in trainable}) == len(trainable)
    assert not ({id(p) for p in trainable} & {id(p) for p in teacher.parameters()})
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in student.parameters()) + extra


# ------------------------------------------------------------------------------- TAS switches


def _pair_terms(out: dict) -> dict[str, set[str]]:
    """loss_<kind>_<pair> -> {kind: {pairs}} (kinds: nce, mse, ofa, kd)."""
    found: dict[str, set[str]] = {}
    for key in loss_terms(out):
        parts = key.split("_")
        if len(parts) == 3 and parts[2] in ("ts", "ta", "as"):
            found.setdefault(parts[1], set()).add(parts[2])
    return found


ALL = {"ts", "ta", "as"}
TAS_EXPECTED = {
    "tas": {"nce": ALL, "ofa": ALL},
    "tas_fusion_a": {"nce": ALL, "ofa": ALL},
    "tas_fusion_b": {"nce": ALL, "ofa": ALL},
    "tas_no_ta": {"nce": {"ts", "as"}, "ofa": {"ts", "as"}},
    "tas_no_as": {"nce": {"ts", "ta"}, "ofa": {"ts", "ta"}},
    "tas_no_ts": {"nce": {"ta", "as"}, "ofa": {"ta", "as"}},
    "tas_no_nce": {"ofa": ALL},
    "tas_no_ofa": {"nce": ALL, "kd": ALL},
    "tas_mse": {"mse": ALL, "ofa": ALL},
}


def test_every_tas_method_of_params_yaml_is_covered():
    assert {m for m in METHODS if CFG.methods[m].type == "tas"} == set(TAS_EXPECTED)


@pytest.mark.parametrize("method_id", sorted(TAS_EXPECTED))
def test_tas_switches_change_the_loss_terms(method_id):
    distiller, _, _ = build(method_id, *PAIRS[0])
    distiller.train()
    out = distiller(*batch())
    assert _pair_terms(out) == TAS_EXPECTED[method_id]
    assert (set(loss_terms(out)) - {f"loss_{k}_{p}" for k, ps in TAS_EXPECTED[method_id].items() for p in ps}
            == {"loss_ce", "loss_ce_assistant"})
    fusion = CFG.methods[method_id].options["fusion"]
    assert distiller.assistant.fusion == fusion
    assert (distiller.assistant.l2g is None) == (fusion == "A")


def test_tas_without_assistant_ce():
    distiller, _, _ = build("tas", *PAIRS[0], assistant_ce=False)
    out = distiller(*batch())
    assert "loss_ce_assistant" not in out and "loss_ce" in out


def test_tas_loss_weights_scale_their_terms():
    base, _, _ = build("tas", *PAIRS[0])
    heavy, _, _ = build("tas", *PAIRS[0], w_nce=3.0, w_logit=0.5)
    base.eval(), heavy.eval()
    x, y = batch()
    with torch.no_grad():
        a, b = base(x, y), heavy(x, y)  # same seeds: same models and same new modules
    for pair in ALL:
        torch.testing.assert_close(b[f"loss_nce_{pair}"], 3.0 * a[f"loss_nce_{pair}"])
        torch.testing.assert_close(b[f"loss_ofa_{pair}"], 0.5 * a[f"loss_ofa_{pair}"])
    torch.testing.assert_close(b["loss_ce"], a["loss_ce"])


@pytest.mark.parametrize("option, value",
                         [("fusion", "C"), ("pairs", ["ts", "st"]), ("feature_loss", "cosine"), ("logit_loss", "dkd")])
def test_tas_rejects_bad_option_values(option, value):
    with pytest.raises(TasError):
        build("tas", *PAIRS[0], **{option: value})


@pytest.mark.parametrize("method_id", METHODS)
def test_soft_labels_from_mixup(method_id):
    distiller, teacher, _ = build(method_id, *PAIRS[0])
    distiller.train()
    x, y = batch()
    target = soft_labels(y)
    out = sgd_step(distiller, x, target)
    for name, value in loss_terms(out).items():
        assert value.ndim == 0 and torch.isfinite(value), name
    assert all(p.grad is None for p in teacher.parameters())


def test_soft_label_ce_differs_from_hard_label_ce():
    distiller, _, _ = build("tas", *PAIRS[0])
    distiller.eval()
    x, y = batch()
    with torch.no_grad():
        hard, soft = distiller(x, y), distiller(x, soft_labels(y, lam=0.5))
    assert not torch.allclose(hard["loss_ce"], soft["loss_ce"])


# ------------------------------------------------------------------------------- KD sanity


def test_kd_with_identical_teacher_and_student_is_zero():
    method = CFG.methods["kd"]
    teacher, student = fresh("tiny_vit", 0), fresh("tiny_vit", 1)
    x, y = batch()
    distiller = build_distiller(method.type, student, teacher, method.options, NUM_CLASSES, make_criterion(0.1))
    distiller.eval()
    with torch.no_grad():
        different = distiller(x, y)["loss_kd"]
    student.model.load_state_dict(teacher.model.state_dict())
    with torch.no_grad():
        same = distiller(x, y)["loss_kd"]
    assert different > 1e-4
    assert abs(same.item()) < 1e-6


def test_kd_temperature_comes_from_params_and_overrides():
    assert CFG.methods["kd"].options["T"] == 1.0  # the OFA harness's default
    cfg = load_config(ROOT / "params.yaml", ["methods.kd.T=2"])
    distiller = build_distiller("kd", fresh("tiny_vit", 1), fresh("tiny_cnn", 0), cfg.methods["kd"].options,
                                NUM_CLASSES, make_criterion(0.0))
    assert distiller.options["T"] == 2


# ------------------------------------------------------------------------------- option validation


def _params_with(tmp_path: Path, method_id: str, **options) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["methods"][method_id].update(options)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("method_id, option", [("kd", "Temp"), ("tas", "fusions"), ("scratch", "T")])
def test_unknown_method_option_is_rejected_naming_the_allowed_keys(tmp_path, method_id, option):
    path = _params_with(tmp_path, method_id, **{option: 2})
    with pytest.raises(TasError) as info:
        load_config(path)
    message = str(info.value)
    assert f"methods.{method_id}.{option}" in message
    allowed = sorted(method_defaults(CFG.methods[method_id].type))
    assert f"allowed: {', '.join(allowed) or 'none'}" in message
    assert "\n" not in message


def test_wrongly_typed_method_option_is_rejected(tmp_path):
    with pytest.raises(TasError, match=r"methods\.kd\.T: expected number, got str .hot."):
        load_config(_params_with(tmp_path, "kd", T="hot"))


def test_dkd_warmup_ramps_the_terms_linearly_on_the_device():
    from tas import losses

    distiller, teacher, student = build("dkd", "tiny_cnn", "tiny_vit", warmup_steps=4)
    distiller.train()
    x, y = batch()
    with torch.no_grad():
        tckd, nckd = losses.dkd_terms(student(x).logits, teacher(x).logits, y, CFG.methods["dkd"].options["T"])
        for step, ramp in ((1, 0.25), (2, 0.5), (4, 1.0), (6, 1.0)):
            while int(distiller.step) < step - 1:
                distiller(x, y)
            out = distiller(x, y)
            alpha, beta = distiller.options["alpha"], distiller.options["beta"]
            assert torch.allclose(out["loss_tckd"], ramp * alpha * tckd, rtol=1e-5), step
            assert torch.allclose(out["loss_nckd"], ramp * beta * nckd, rtol=1e-5), step
    distiller.eval()
    assert torch.allclose(distiller(x, y)["loss_tckd"], distiller.options["alpha"] * tckd, rtol=1e-5)


def test_fitnet_hints_every_stage_and_shrinking_first_changes_nothing():
    from tas import losses

    distiller, teacher, student = build("fitnet", "tiny_vit", "tiny_cnn")  # CNN maps 32..4 px vs the ViT's 8x8 grid
    assert distiller.stages == [1, 2, 3, 4] and all(conv.bias is None for conv in distiller.regressors.values())
    distiller.eval()
    x, y = batch()
    with torch.no_grad():
        ks, kt = student(x), teacher(x)
        expected = sum(losses.fitnet_hint(distiller.regressors[str(s)](student.to_map(ks.stages[s - 1], s - 1)),
                                          teacher.to_map(kt.stages[s - 1], s - 1)) for s in (1, 2, 3, 4))
        torch.testing.assert_close(distiller(x, y)["loss_hint"], distiller.options["weight"] * expected,
                                   rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- typed options, declared once


def test_every_option_of_every_method_has_a_rule_its_default_obeys():
    from tas.distillers.registry import declaration, method_types

    for method_type in method_types():
        method = declaration(method_type)
        assert set(method.rules or {}) == set(method.defaults), (
            f"{method_type}: options without a rule, or rules without an option")
        assert method.problem(method.defaults) is None, f"{method_type}: its defaults break its own rules"


def test_choice_rules_are_the_lists_the_code_branches_on():
    from tas.distillers.ofa import BRANCH_READOUTS
    from tas.distillers.registry import declaration
    from tas.distillers.tas import PAIRS
    from tas.models.assistant import B_READOUTS

    tas_rules = declaration("tas").rules
    assert tuple(tas_rules["b_readout"]["enum"]) == B_READOUTS
    assert tuple(tas_rules["pairs"]["items"]["enum"]) == PAIRS
    assert tuple(declaration("ofa").rules["branch_readout"]["enum"]) == BRANCH_READOUTS


@pytest.mark.parametrize("override, words", [
    ("methods.tas.feature_loss=nce",
     r"methods\.tas\.feature_loss: 'nce' is not allowed; use one of: info_nce, mse, none"),
    ("methods.kd.T=-2", r"methods\.kd\.T: -2 is out of range \(exclusiveMinimum 0\)"),
    ("methods.kd.T=0", r"methods\.kd\.T: 0 is out of range"),
    ("methods.ofa.stages=[1,1]", r"methods\.ofa\.stages: \[1, 1\] lists a value twice"),
    ("methods.ofa.stages=[5]", r"methods\.ofa\.stages\[0\]: 5 is not allowed"),
    ("methods.rsd.expansion=1.5", r"methods\.rsd\.expansion: expected integer"),
    ("methods.tas.pairs=[ts,xx]", r"methods\.tas\.pairs\[1\]: 'xx' is not allowed"),
    ("methods.ofa.ofa_weight=-1", r"methods\.ofa\.ofa_weight: -1 is out of range"),
])
def test_check_refuses_bad_option_values_naming_the_option_and_what_is_allowed(override, words):
    with pytest.raises(TasError, match=words):
        load_config(ROOT / "params.yaml", [override])


def test_the_distiller_applies_the_same_rules_when_built_from_python():
    with pytest.raises(TasError, match=r"method option tas\.feature_loss: 'nce' is not allowed"):
        build("tas", *PAIRS[0], feature_loss="nce")
