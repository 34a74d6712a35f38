"""The hybrid assistant (METHOD.md s.2): roles, shapes on the paper's pairs, sharing, gradient routing,
reuse of part A's activations, fusion ablations, and the `prepare-run` CLI subcommand (TAS's assistant built first).

References are timm's own modules and call counts / FLOPs measured with hooks and
`torch.utils.flop_counter`, not the assistant's own code. The 32-px models of the 12 CIFAR pairs (and
the 224-px subset) are built once per module and shared read-only; every test that trains or
modifies weights builds its own tiny models.
"""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from timm.models.swin_transformer import SwinTransformerBlock
from torch.utils.flop_counter import FlopCounterMode

from tas import paths
from tas.config import load_config
from tas.distillers import build_distiller
from tas.engine.trainer import make_criterion
from tas.errors import TasError
from tas.models import create_model
from tas.models.assistant import FUSIONS, HybridAssistant

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")
NUM_CLASSES = 10
BATCH = 2

# METHOD.md s.6: the 12 heterogeneous CIFAR-100 pairs, by display name (teacher, student).
PAPER_PAIRS = {
    ("Swin-T", "ResNet18"), ("ViT-S", "ResNet18"), ("ViT-S", "MobileNetV2"), ("ConvNeXt-T", "DeiT-T"),
    ("ConvNeXt-T", "ResMLP-S12"), ("Swin-T", "MobileNetV2"), ("Mixer-B/16", "ResNet18"), ("Mixer-B/16", "MobileNetV2"),
    ("ConvNeXt-T", "Swin-P"), ("Mixer-B/16", "DeiT-T"), ("Mixer-B/16", "Swin-P"), ("Swin-T", "ResMLP-S12"),
}
CIFAR_PAIRS = CFG.experiment("cifar100_32").pairs
PAIRS_224 = [("swin_t", "r18"), ("convnext_t", "deit_t"), ("vit_s", "mbv2")]


def expected_part_a(teacher_id: str, student_id: str) -> str:
    """METHOD.md s.2 from params.yaml families: A is the CNN of a CNN/non-CNN pair, else the student."""
    teacher_cnn = CFG.models[teacher_id].family == "cnn"
    student_cnn = CFG.models[student_id].family == "cnn"
    return "teacher" if teacher_cnn and not student_cnn else "student"


def fresh(model_id: str, seed: int = 0, size: int = 32):
    torch.manual_seed(seed)
    view = create_model(CFG.models[model_id], NUM_CLASSES, size)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # timm zero-inits some weights (Mixer head, ResNet last-BN gamma); make them count
        for name, param in view.model.named_parameters():
            if not name.endswith("bias") and not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return view


def images(size: int = 32, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_thread")


class _Views:
    def __init__(self) -> None:
        self.cache: dict = {}

    def __call__(self, model_id: str, size: int = 32):
        if (model_id, size) not in self.cache:
            self.cache[(model_id, size)] = fresh(model_id, seed=len(self.cache), size=size).eval()
        return self.cache[(model_id, size)]


@pytest.fixture(scope="module")
def views():
    cache = _Views()
    yield cache
    cache.cache.clear()


def _parts(assistant: HybridAssistant, teacher, student):
    return (student, teacher) if assistant.roles.part_a == "student" else (teacher, student)


def flops(fn, *args) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args)
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------- the paper's pairs


def test_cifar100_32_holds_the_12_paper_pairs_at_32_px():
    assert len(CIFAR_PAIRS) == 12
    assert {(CFG.models[p.teacher].name, CFG.models[p.student].name) for p in CIFAR_PAIRS} == PAPER_PAIRS
    assert CFG.protocol_of(CFG.experiment("cifar100_32")).augment.image_size == 32


def _check_pair(teacher, student, teacher_id, student_id, size, fusions=FUSIONS):
    x = images(size)
    role = expected_part_a(teacher_id, student_id)
    part_a, part_b = (teacher, student) if role == "teacher" else (student, teacher)
    with torch.no_grad():
        stage3 = part_a(x).stages[2]  # as the distiller does: from the part-A model's own forward
    for fusion in fusions:
        assistant = HybridAssistant(teacher, student, NUM_CLASSES, fusion=fusion).eval()
        assert (assistant.roles.part_a == role
                and assistant.roles.part_b == ("student" if role == "teacher" else "teacher"))
        assert assistant.part_a is part_a and assistant.part_b is part_b
        with torch.no_grad():
            a_map, feature, logits = assistant(stage3)
        assert logits.shape == (BATCH, NUM_CLASSES), fusion
        assert torch.isfinite(logits).all(), fusion
        assert feature.shape == (BATCH, assistant.feature_dim), fusion
        assert a_map.ndim == 4 and a_map.shape[0] == BATCH
        if fusion == "full":
            out = part_b.layouts[3]
            assert a_map.shape == (BATCH, out.channels, *out.grid)
            assert assistant.feature_dim == part_b.feature_dim
            spec = assistant.spec()
            assert spec["part_a_family"] == CFG.models[teacher_id if role == "teacher" else student_id].family
            assert spec["stage3_a"] == part_a.layouts[2].as_dict() and spec["stage3_b"] == part_b.layouts[2].as_dict()
            assert spec["new_parameters"] == sum(p.numel() for p in assistant.l2g.parameters())


@pytest.mark.parametrize("pair", CIFAR_PAIRS, ids=lambda p: p.id)
def test_assistant_of_each_cifar32_pair(pair, views):
    _check_pair(views(pair.teacher), views(pair.student), pair.teacher, pair.student, 32)


@pytest.mark.slow
@pytest.mark.parametrize("teacher_id, student_id", PAIRS_224, ids=lambda v: v)
def test_assistant_of_paper_pairs_at_224(teacher_id, student_id, views):
    _check_pair(views(teacher_id, 224), views(student_id, 224), teacher_id, student_id, 224, fusions=("full",))


# ------------------------------------------------------------------------------- roles


@pytest.mark.parametrize("teacher_id, student_id, part_a", [
    ("tiny_vit", "tiny_cnn", "student"),        # CNN student, ViT teacher
    ("tiny_swin", "tiny_cnn", "student"),       # CNN student, Swin teacher
    ("tiny_cnn", "tiny_vit", "teacher"),        # CNN teacher, ViT student
    ("tiny_convnext", "tiny_mlp", "teacher"),   # CNN teacher, MLP student
    ("tiny_convnext", "tiny_cnn", "student"),   # homogeneous CNN-CNN
    ("tiny_vit", "tiny_swin", "student"),       # both attention
    ("tiny_mlp", "tiny_vit", "student"),        # Mixer -> DeiT style: neither is a CNN
])
def test_role_assignment_follows_method_section_2(teacher_id, student_id, part_a):
    assert expected_part_a(teacher_id, student_id) == part_a
    teacher, student = fresh(teacher_id, 0).eval(), fresh(student_id, 1).eval()
    assistant = HybridAssistant(teacher, student, NUM_CLASSES)
    assert assistant.roles.part_a == part_a
    assert assistant.part_a is (student if part_a == "student" else teacher)
    assert assistant.part_b is (teacher if part_a == "student" else student)
    with torch.no_grad():
        logits = assistant(assistant.part_a(images()).stages[2])[2]
    assert logits.shape == (BATCH, NUM_CLASSES)


def test_mixer_to_deit_pair_of_the_paper_puts_the_student_first(views):
    pair = next(p for p in CIFAR_PAIRS
                if (CFG.models[p.teacher].name, CFG.models[p.student].name) == ("Mixer-B/16", "DeiT-T"))
    assistant = HybridAssistant(views(pair.teacher), views(pair.student), NUM_CLASSES)
    assert (assistant.roles.part_a, assistant.roles.part_b) == ("student", "teacher")


# ------------------------------------------------------------------------------- L2G


def test_l2g_to_a_window_model_is_a_strided_patch_embedding_layernorm_and_one_swin_block(views):
    # r18_32 stage 3: 256 x 8 x 8 -> Swin-T stage-4 input: 4 x 4 x 384 (stride 8 / 4 = 2)
    assistant = HybridAssistant(views("swin_t32"), views("r18_32"), NUM_CLASSES)
    l2g = assistant.l2g
    assert isinstance(l2g.proj, nn.Conv2d)
    assert (l2g.proj.in_channels, l2g.proj.out_channels) == (256, 384)
    assert l2g.proj.kernel_size == (2, 2) and l2g.proj.stride == (2, 2)
    assert isinstance(l2g.norm, nn.LayerNorm) and l2g.norm.normalized_shape == (384,)
    assert isinstance(l2g.block, SwinTransformerBlock)
    assert sum(isinstance(m, SwinTransformerBlock) for m in l2g.modules()) == 1


def _block_mlp_ratio(block: SwinTransformerBlock) -> float:
    return block.mlp.fc1.out_features / block.dim


@pytest.mark.parametrize("teacher_id, student_id, ratio", [
    ("swin_t32", "r18_32", 4.0),       # B = Swin-T teacher (timm default 4)
    ("convnext_t32", "deit_t32", 4.0),  # B = DeiT-T student
    ("mixer_b32", "r18_32", 4.0),      # B = Mixer-B teacher: channel MLP 4, token MLP 0.5
    ("tiny_cnn", "tiny_vit", 2.0),     # B = the mini ViT student, mlp_ratio 2
    ("tiny_cnn", "tiny_mlp", 2.0),     # B = the mini Mixer student, channel MLP 2 (token MLP 0.5)
    ("tiny_vit", "tiny_cnn", 2.0),     # B = the mini ViT teacher
])
def test_l2g_block_takes_part_b_channel_mlp_ratio_by_default(teacher_id, student_id, ratio, views):
    teacher, student = views(teacher_id), views(student_id)
    assistant = HybridAssistant(teacher, student, NUM_CLASSES)
    assert _block_mlp_ratio(assistant.l2g.block) == ratio
    assert assistant.spec()["l2g"]["mlp_ratio"] == ratio
    # ground truth from B's own first stage-4 block, read from timm's module, not our helper
    part_b = assistant.part_b.stage_module(3)
    fc1 = next(m.fc1 for name, m in part_b.named_modules() if name.endswith(("mlp", "mlp_channels")))
    assert fc1.out_features / fc1.in_features == ratio


def test_l2g_mlp_ratio_option_overrides_and_is_validated(views):
    teacher, student = views("tiny_cnn"), views("tiny_vit")
    assert _block_mlp_ratio(HybridAssistant(teacher, student, NUM_CLASSES, l2g_mlp_ratio=4).l2g.block) == 4.0
    for bad in (0, -1.0, "wide", True):
        with pytest.raises(TasError, match="l2g_mlp_ratio"):
            HybridAssistant(teacher, student, NUM_CLASSES, l2g_mlp_ratio=bad)


def test_l2g_resamples_grids_that_do_not_divide(views):
    # Mixer -> Swin-P: A = Swin-P student (4 x 4 x 192) -> Mixer tokens 8 x 8 x 768
    assistant = HybridAssistant(views("mixer_b32"), views("swin_p32"), NUM_CLASSES)
    assert assistant.l2g.proj.kernel_size == (1, 1)
    with torch.no_grad():
        out = assistant.l2g(torch.randn(BATCH, 192, 4, 4))
    assert out.shape == (BATCH, 8, 8, 768)


def test_l2g_to_a_cnn_is_a_1x1_conv_and_batchnorm():
    teacher, student = fresh("tiny_convnext", 0), fresh("tiny_cnn", 1)  # homogeneous CNN: B = teacher
    assistant = HybridAssistant(teacher, student, NUM_CLASSES)
    conv, bn = assistant.l2g.proj
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (student.layouts[2].channels, teacher.layouts[2].channels)
    assert isinstance(bn, nn.BatchNorm2d)
    assert not any(isinstance(m, (SwinTransformerBlock, nn.LayerNorm)) for m in assistant.l2g.modules())


# ------------------------------------------------------------------------------- part B really is B


class _AsNHWC(nn.Module):
    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m.permute(0, 2, 3, 1)


class _Same(nn.Module):
    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m


@pytest.mark.parametrize("model_id", ["tiny_cnn", "tiny_convnext", "tiny_swin", "tiny_mlp"])
def test_part_b_with_an_identity_l2g_reproduces_b_own_forward(model_id):
    # student == teacher (same weights), L2G replaced by the identity: the assistant must be exactly B.
    teacher, student = fresh(model_id, 0).eval(), fresh(model_id, 1).eval()
    student.model.load_state_dict(teacher.model.state_dict())
    assistant = HybridAssistant(teacher, student, NUM_CLASSES)
    assert assistant.roles.part_b == "teacher"
    assistant.l2g = _Same() if teacher.is_convolutional else _AsNHWC()
    x = images()
    with torch.no_grad():
        kt = teacher(x)
        a_map, feature, logits = assistant(student(x).stages[2])
    torch.testing.assert_close(feature, kt.feature, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, kt.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a_map, teacher.to_map(kt.stages[3], 3), atol=1e-5, rtol=0)


def test_vit_part_b_adds_the_class_token_and_position_embedding_once():
    teacher, student = fresh("tiny_vit", 0).eval(), fresh("tiny_cnn", 1).eval()  # A = CNN student, B = ViT teacher
    assistant = HybridAssistant(teacher, student, NUM_CLASSES).eval()
    x = images()
    vit = teacher.model
    with torch.no_grad():
        stage3 = student(x).stages[2]
        _, feature, logits = assistant(stage3)
        tokens = assistant.l2g(stage3).flatten(1, 2)  # (B, 64, C) patch tokens
        h = torch.cat([vit.cls_token.expand(BATCH, -1, -1), tokens], dim=1) + vit.pos_embed
        h = vit.blocks[5](h)  # stage 4 of the 6-block tiny ViT
        reference = vit.forward_head(vit.norm(h), pre_logits=True)
    torch.testing.assert_close(feature, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, vit.get_classifier()(reference), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- sharing


@pytest.mark.parametrize("teacher_id, student_id",
                         [("tiny_vit", "tiny_cnn"), ("tiny_cnn", "tiny_vit"), ("tiny_swin", "tiny_cnn")])
def test_assistant_shares_storage_and_owns_only_l2g(teacher_id, student_id):
    teacher, student = fresh(teacher_id, 0).eval(), fresh(student_id, 1).eval()
    assistant = HybridAssistant(teacher, student, NUM_CLASSES).eval()
    a_view, b_view = _parts(assistant, teacher, student)
    a_ptrs = {p.data_ptr() for p in a_view.model.parameters()}
    b_ptrs = {p.data_ptr() for p in b_view.model.parameters()}
    # Part A's stages 1-3 and part B's stage 4 are the models' own tensors (the timm modules by name)
    for index in range(3):
        for p in assistant.part_a.stage_module(index).parameters():
            assert p.data_ptr() in a_ptrs
    b_stage4_end = b_view.model.get_submodule(b_view.stage_names[3])
    assert ({p.data_ptr() for p in b_stage4_end.parameters()}
            <= {p.data_ptr() for p in assistant.part_b.stage_module(3).parameters()} <= b_ptrs)
    # The assistant registers only L2G: no copy of the student's or teacher's weights
    own = dict(assistant.named_parameters())
    assert own and all(name.startswith("l2g.") for name in own)
    assert all(key.startswith("l2g.") for key in assistant.state_dict())
    assert not ({p.data_ptr() for p in own.values()} & (a_ptrs | b_ptrs))
    assert assistant.new_parameters() == sum(p.numel() for p in assistant.l2g.parameters())

    # Live sharing: changing the models' weights in place changes the assistant
    x = images()
    with torch.no_grad():
        before = assistant(assistant.part_a(x).stages[2])[2]
        b_stage4_end.apply(lambda m: [p.mul_(-1.5) for p in m.parameters(recurse=False)])
        after_b = assistant(assistant.part_a(x).stages[2])[2]
        assert not torch.allclose(before, after_b, atol=1e-5)
        a_stage2_end = a_view.model.get_submodule(a_view.stage_names[1])
        a_stage2_end.apply(lambda m: [p.mul_(-1.5) for p in m.parameters(recurse=False)])
        after_a = assistant(assistant.part_a(x).stages[2])[2]
        assert not torch.allclose(after_b, after_a, atol=1e-5)


@pytest.mark.parametrize("fusion, prefixes", [("A", {"head."}), ("B", {"l2g.", "head."})])
def test_fusion_variants_register_only_their_new_modules(fusion, prefixes):
    teacher, student = fresh("tiny_vit", 0), fresh("tiny_cnn", 1)
    assistant = HybridAssistant(teacher, student, NUM_CLASSES, fusion=fusion)
    names = [n for n, _ in assistant.named_parameters()]
    assert {n.split(".")[0] + "." for n in names} == prefixes
    assert (assistant.l2g is None) == (fusion == "A")


def test_unknown_fusion_is_a_tas_error():
    with pytest.raises(TasError, match=r"fusion 'C'.*full, A, B"):
        HybridAssistant(fresh("tiny_vit"), fresh("tiny_cnn"), NUM_CLASSES, fusion="C")


# ------------------------------------------------------------------------------- gradient routing


def _tas(teacher, student, **options):
    method = CFG.methods["tas"]
    return build_distiller(method.type, student, teacher, {**method.options, **options}, NUM_CLASSES,
                           make_criterion(0.1))


def _grads(module: nn.Module) -> list:
    return [p.grad for p in module.parameters()]


def _reached(module: nn.Module) -> bool:
    grads = _grads(module)
    return bool(grads) and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _untouched(module: nn.Module) -> bool:
    return all(g is None for g in _grads(module))


def _stem_modules(view) -> nn.Module:
    return view.model.get_submodule(view.model.pretrained_cfg["first_conv"])


def _assistant_ce_backward(teacher_id: str, student_id: str, part_a: str):
    """A TAS distiller in train mode after one backward of the assistant's CE alone."""
    teacher, student = fresh(teacher_id, 0), fresh(student_id, 1)
    distiller = _tas(teacher, student)
    distiller.train()
    assert distiller.assistant.roles.part_a == part_a
    out = distiller(images(batch=4), torch.arange(4))
    out["loss_ce_assistant"].backward()
    return teacher, student, distiller


@pytest.mark.parametrize("teacher_id", ["tiny_vit", "tiny_swin"])
def test_assistant_ce_trains_l2g_and_student_stages_1_to_3_when_the_student_is_the_cnn(teacher_id):
    teacher, student, distiller = _assistant_ce_backward(teacher_id, "tiny_cnn", part_a="student")

    assert _reached(distiller.assistant.l2g)
    assert _reached(_stem_modules(student))
    for index in range(3):
        assert _reached(student.stage_module(index)), f"student stage {index + 1}"
    # the assistant's CE does not involve the student's stage 4 or head
    assert _untouched(student.stage_module(3)) and _untouched(student.model.get_classifier())
    # the teacher is frozen: no grads, eval mode, whatever train() was called with
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert student.training


def test_assistant_ce_trains_l2g_and_student_stage_4_when_the_teacher_is_the_cnn():
    teacher, student, distiller = _assistant_ce_backward("tiny_cnn", "tiny_vit", part_a="teacher")

    assert _reached(distiller.assistant.l2g)
    assert _reached(student.stage_module(3))
    assert _reached(student.model.norm) and _reached(student.model.get_classifier())
    assert _untouched(_stem_modules(student))
    for index in range(3):
        assert _untouched(student.stage_module(index)), f"student stage {index + 1}"
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not any(m.training for m in teacher.modules())


def test_full_tas_loss_never_reaches_the_teacher_but_trains_its_projection_head():
    teacher, student = fresh("tiny_vit", 0), fresh("tiny_cnn", 1)
    distiller = _tas(teacher, student)
    distiller.train()
    out = distiller(images(batch=4), torch.arange(4))
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert _reached(distiller.proj["t"])  # g_t learns, the teacher does not (METHOD.md s.4)
    assert _reached(distiller.assistant.l2g)
    assert distiller.logit_scale.grad is not None


# ------------------------------------------------------------------------------- reuse / cost


def _keep(store: dict, key: str, value) -> None:
    """Record the first value seen under `key`; returns None so a hook never replaces args/outputs."""
    store.setdefault(key, value)


def _hook_counts(view, prefix: str) -> tuple[dict, list]:
    modules = {f"{prefix}.stem": _stem_modules(view), f"{prefix}.head": view.model.get_classifier()}
    for index, name in enumerate(view.stage_names):
        modules[f"{prefix}.stage{index + 1}"] = view.model.get_submodule(name)
    counts = dict.fromkeys(modules, 0)
    handles = [m.register_forward_hook(lambda mod, args, out, key=key: counts.__setitem__(key, counts[key] + 1))
               for key, m in modules.items()]
    return counts, handles


@pytest.mark.parametrize("teacher_id, student_id, fusion, b_stage4_calls", [
    ("tiny_vit", "tiny_cnn", "full", 2),   # A = student, B = teacher: teacher forward + assistant
    ("tiny_swin", "tiny_cnn", "full", 2),
    ("tiny_cnn", "tiny_vit", "full", 2),   # A = teacher, B = student: student forward + assistant
    ("tiny_vit", "tiny_cnn", "A", 1),      # no stage 4 of B
    ("tiny_vit", "tiny_cnn", "B", 1),
])
def test_tas_step_runs_part_a_once_and_part_b_stage_4_once_more(teacher_id, student_id, fusion, b_stage4_calls):
    teacher, student = fresh(teacher_id, 0), fresh(student_id, 1)
    distiller = _tas(teacher, student, fusion=fusion)
    distiller.train()
    assistant = distiller.assistant
    t_counts, t_handles = _hook_counts(teacher, "t")
    s_counts, s_handles = _hook_counts(student, "s")
    a_prefix, b_prefix = ("s", "t") if assistant.roles.part_a == "student" else ("t", "s")
    a_view = student if a_prefix == "s" else teacher
    captured = {}
    a_view.model.get_submodule(a_view.stage_names[2]).register_forward_hook(
        lambda m, args, out: _keep(captured, "stage3", out))
    assistant.register_forward_pre_hook(lambda m, args: _keep(captured, "assistant_input", args[0]))
    l2g_calls = []
    if assistant.l2g is not None:
        assistant.l2g.register_forward_hook(lambda m, args, out: l2g_calls.append(1))

    out = distiller(images(batch=4), torch.arange(4))
    for handle in t_handles + s_handles:
        handle.remove()
    counts = {**t_counts, **s_counts}
    for key, value in counts.items():
        if key in (f"{b_prefix}.stage4", f"{b_prefix}.head"):
            assert value == b_stage4_calls, (key, counts)
        else:
            assert value == 1, (key, counts)  # part A's stem and stages 1-3 (and everything else) run once
    # the assistant consumed the very tensor part A's own forward produced
    assert captured["assistant_input"] is captured["stage3"]
    assert len(l2g_calls) == (0 if fusion == "A" else 1)
    assert out["loss_ce_assistant"].ndim == 0


@pytest.mark.parametrize("teacher_id, student_id", [("tiny_vit", "tiny_cnn"), ("tiny_cnn", "tiny_vit"),
                                                    ("swin_t32", "r18_32"), ("convnext_t32", "swin_p32")])
def test_assistant_flops_are_l2g_plus_one_stage_4_plus_head(teacher_id, student_id, views):
    teacher, student = views(teacher_id), views(student_id)
    assistant = HybridAssistant(teacher, student, NUM_CLASSES).eval()
    b_view = assistant.part_b
    x = images(batch=1)
    with torch.no_grad():
        stage3 = assistant.part_a(x).stages[2]
    seen = {}
    hooks = [
        assistant.l2g.register_forward_pre_hook(lambda m, args: _keep(seen, "l2g_in", args[0])),
        b_view.stage_module(3).register_forward_pre_hook(lambda m, args: _keep(seen, "b4_in", args[0])),
        b_view.stage_module(3).register_forward_hook(lambda m, args, out: _keep(seen, "b4_out", out)),
    ]
    total = flops(assistant, stage3)
    for hook in hooks:
        hook.remove()
    part_a_cost = flops(lambda t: assistant.part_a.stage(
        2, assistant.part_a.stage(1, assistant.part_a.stage(0, assistant.part_a.stem(t)))), x)
    l2g_cost = flops(assistant.l2g, seen["l2g_in"])
    stage4_cost = flops(b_view.stage_module(3), seen["b4_in"])
    head_cost = flops(lambda h: b_view.classify(b_view.head_features(h)), seen["b4_out"])
    assert l2g_cost > 0 and stage4_cost > 0 and part_a_cost > 0
    assert total == l2g_cost + stage4_cost + head_cost


# ------------------------------------------------------------------------------- prepare-run CLI


def _cli(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tas", *args, "--set", f"paths.results={results}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built_assistant(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = _cli("prepare-run", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "tas",
                results=results)
    assert proc.returncode == 0, proc.stderr
    return proc, paths.prepared_record(results, "mini", "tiny_cnn-tiny_vit", "tas")


def test_prepare_run_writes_spec_and_l2g(built_assistant):
    proc, out = built_assistant
    spec = json.loads(out.read_text())
    for key in ("part_a_source", "part_b_source", "shared_parameters", "new_parameters", "flops_total", "shape_plan"):
        assert key in spec, key
    assert spec["part_a_source"].startswith("teacher:")  # CNN teacher, ViT student: A = teacher
    assert spec["part_b_source"].startswith("student:")
    assert (spec["method"], spec["built_first"], spec["shape_plan"]["fusion"]) == ("tas", "assistant", "full")
    assert spec["shape_plan"]["stage3_a"]["kind"] == "map" and spec["shape_plan"]["stage3_b"]["kind"] == "tokens"
    assert json.loads(proc.stdout)["pair"] == "tiny_cnn-tiny_vit"

    # the record only: runs draw L2G from their seed
    assert sorted(p.name for p in out.parent.iterdir()) == ["tas.json"]


def test_prepare_run_flops_are_measured(built_assistant):
    _, out = built_assistant
    spec = json.loads(out.read_text())
    teacher, student = fresh("tiny_cnn"), fresh("tiny_vit")
    assistant = HybridAssistant(teacher, student, NUM_CLASSES).eval()
    x = images(batch=1)
    a = assistant.part_a
    stage3 = lambda t: a.stage(2, a.stage(1, a.stage(0, a.stem(t))))  # noqa: E731
    with torch.no_grad():
        h = stage3(x)
    added = flops(assistant, h)
    assert spec["flops_added_per_step"] == added
    assert spec["flops_total"] == flops(stage3, x) + added


def test_prepare_run_shared_parameters_are_those_the_assistant_uses(built_assistant):
    _, out = built_assistant
    spec = json.loads(out.read_text())
    teacher, student = fresh("tiny_cnn"), fresh("tiny_vit")
    assistant = HybridAssistant(teacher, student, NUM_CLASSES).eval()
    a = assistant.part_a
    logits = assistant(a.stage(2, a.stage(1, a.stage(0, a.stem(images(batch=1))))))[2]
    logits.sum().backward()
    borrowed = {id(p): p.numel() for view in (teacher, student) for p in view.parameters() if p.grad is not None}
    assert spec["shared_parameters"] == sum(borrowed.values())


def test_prepare_run_unknown_pair_exits_2_with_one_error_line(tmp_path):
    proc = _cli("prepare-run", "--experiment", "mini", "--pair", "nope-tiny_vit", "--method", "tas", results=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "nope-tiny_vit" in errors[0] and "tiny_cnn-tiny_vit" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.rglob("*")), "nothing may be written for a bad pair"
