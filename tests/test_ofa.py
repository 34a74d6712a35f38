"""OFA's branch heads have the size of the original's (Hao840/OFAKD distillers/ofa.py + utils.py).

The reference counts below are computed in closed form from the original structure, on the stage
shapes its `stage_info` tables give for each timm model at 224 px (channels, grid side), independently
of tas's code:
- CNN student, stage k < 4: (4 - k) SepConv blocks; block i takes C_k * 2^i channels and gives twice
  that, the last gives W = max(d_s, d_t). SepConv(ci, co) = dw3x3(ci) + pw(ci, ci) + BN(ci) + dw3x3(ci)
  + pw(ci, co) + BN(co), convs bias-free. Stage 4: Conv1x1(C_4 -> W) with bias (C_4 is the map the
  head pools: 1280 for MobileNetV2, after its conv_head). Then Linear(W -> classes).
- Token student: m = floor(log2(grid / 7)) PatchMerging layers (LayerNorm(4C) + bias-free Linear(4C -> out)),
  the first from C_k to d_s, the others d_s -> d_s; max(4 - k, 1) timm Blocks at d_s (qkv without bias,
  MLP ratio 4): 12 d^2 + 10 d each; Linear(d_s -> classes).
Anchor: ConvNeXt-T -> Swin-N on ImageNet-1k is 28.2 M in the RSD paper's parameter table.
Models are only built and counted here (one dummy forward each for the stage view), never trained.
"""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

from pathlib import Path

import pytest
import torch

from tas.config import load_config
from tas.distillers import build_distiller
from tas.engine.trainer import make_criterion
from tas.errors import TasError
from tas.models import create_model

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")

# OFAKD custom_forward/*.py stage_info at 224 px: per stage (channels, grid side); "d": pooled width.
ORIGINAL_STAGES = {
    "r18": {"cnn": True, "stages": [(64, 56), (128, 28), (256, 14), (512, 7)], "d": 512},
    "mbv2": {"cnn": True, "stages": [(24, 56), (32, 28), (96, 14), (1280, 7)], "d": 1280},
    "deit_t": {"cnn": False, "stages": [(192, 14)] * 4, "d": 192},
    "swin_p": {"cnn": False, "stages": [(48, 56), (96, 28), (192, 14), (384, 7)], "d": 384},
    "swin_n": {"cnn": False, "stages": [(64, 56), (128, 28), (256, 14), (512, 7)], "d": 512},
    "resmlp_s12": {"cnn": False, "stages": [(384, 14)] * 4, "d": 384},
}
TEACHER_WIDTH = {"swin_t": 768, "vit_s": 384, "mixer_b16": 768, "convnext_t": 768}


def _sepconv(ci: int, co: int) -> int:
    return 9 * ci + ci * ci + 2 * ci + 9 * ci + ci * co + 2 * co


def _block(d: int) -> int:
    return 12 * d * d + 10 * d


def original_ofa_parameters(student: str, teacher: str, classes: int) -> int:
    spec = ORIGINAL_STAGES[student]
    d_s, d_t = spec["d"], TEACHER_WIDTH[teacher]
    total = 0
    for k, (channels, grid) in enumerate(spec["stages"], start=1):
        if spec["cnn"]:
            width = max(d_s, d_t)
            if k == 4:
                total += channels * width + width
            else:
                c = channels
                for i in range(4 - k):
                    total += _sepconv(c, width if i == 3 - k else 2 * c)
                    c *= 2
            total += width * classes + classes
        else:
            merges, g = 0, grid
            while g // 2 >= 7:
                merges, g = merges + 1, g // 2
            for i in range(merges):
                c_in = channels if i == 0 else d_s
                total += 8 * c_in + 4 * c_in * d_s
            total += max(4 - k, 1) * _block(d_s) + d_s * classes + classes
    return total


@pytest.fixture(scope="module")
def views():
    cache = {}

    def get(model_id: str, classes: int):
        key = (model_id, classes)
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = create_model(CFG.models[model_id], classes, 224)
        return cache[key]

    return get


def _ofa(views, teacher: str, student: str, classes: int):
    options = CFG.methods["ofa"].options
    return build_distiller("ofa", views(student, classes), views(teacher, classes), options, classes,
                           make_criterion(0.0))


CIFAR_PAIRS = [(p.teacher, p.student) for p in CFG.experiments["cifar100"].pairs]


def test_the_twelve_paper_pairs_are_covered():
    assert len(CIFAR_PAIRS) == 12 and {s for _, s in CIFAR_PAIRS} <= set(ORIGINAL_STAGES)


@pytest.mark.parametrize("teacher, student", CIFAR_PAIRS, ids=lambda v: v)
def test_extra_parameters_match_the_original_heads(views, teacher, student):
    ours = _ofa(views, teacher, student, 100).extra_parameters()
    reference = original_ofa_parameters(student, teacher, 100)
    assert abs(ours - reference) <= 0.02 * reference, (ours, reference)


def test_convnext_t_to_swin_n_on_imagenet_is_the_rsd_papers_28_2_m(views):
    reference = original_ofa_parameters("swin_n", "convnext_t", 1000)
    assert round(reference / 1e6, 1) == 28.2  # the closed form reproduces the published figure
    ours = _ofa(views, "convnext_t", "swin_n", 1000).extra_parameters()
    assert round(ours / 1e6, 1) == 28.2


def test_branch_defaults_follow_the_student_kind(views):
    cnn = _ofa(views, "swin_t", "r18", 100)
    token = _ofa(views, "convnext_t", "deit_t", 100)
    assert (cnn.ofa_weight, token.ofa_weight) == (0.1, 1.0)
    assert cnn.stages == token.stages == [1, 2, 3, 4]
    overridden = build_distiller("ofa", views("r18", 100), views("swin_t", 100),
                                 {**CFG.methods["ofa"].options, "ofa_weight": 0.5}, 100, make_criterion(0.0))
    assert overridden.ofa_weight == 0.5


def test_branches_give_logits_for_every_stage_of_a_224px_student(views):
    distiller = _ofa(views, "convnext_t", "deit_t", 100)
    distiller.eval()
    with torch.no_grad():
        out = distiller(torch.zeros(2, 3, 224, 224), torch.tensor([0, 1]))
    assert {f"loss_ofa{k}" for k in (1, 2, 3, 4)} | {"loss_ofa_logits", "loss_ce"} <= set(out)
    assert all(torch.isfinite(v) for k, v in out.items() if k.startswith("loss_"))


# ------------------------------------------------------------------ token-branch readout (OFAKD #38)
# OFA's code reads a class token only when the student has `num_tokens`, which timm 0.6.5's ViT lacks;
# the authors' fix (OFAKD #38) drops the class token before the branch, which leaves the mean readout.


def _tiny_vit_ofa(**overrides):
    """OFA on the tiny ViT student (a class token, 8x8 patch grid at 32 px), tiny CNN teacher."""
    torch.manual_seed(0)
    teacher = create_model(CFG.models["tiny_cnn"], 10, 32)
    torch.manual_seed(1)
    student = create_model(CFG.models["tiny_vit"], 10, 32)
    distiller = build_distiller("ofa", student, teacher, {**CFG.methods["ofa"].options, **overrides}, 10,
                                make_criterion(0.0))
    return distiller.eval()


def _stage_tokens(distiller, seed: int = 0):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return distiller.student(x).stages


def _merged_patches(branch, patches: torch.Tensor) -> torch.Tensor:
    """The branch's patch merges applied by hand: OFA's 2x2 order (0,0), (1,0), (0,1), (1,1), then
    LayerNorm, the bias-free reduction and the activation; returns (B, tokens, C)."""
    grid = patches
    for merge in branch.merges:
        grid = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], dim=-1)
        grid = merge.act(merge.reduction(merge.norm(grid)))
    return grid.flatten(1, 2)


def test_branch_readout_default_is_what_ofa_ran_under_timm_065():
    assert CFG.methods["ofa"].options["branch_readout"] == "mean"
    assert _tiny_vit_ofa().options["branch_readout"] == "mean"


@pytest.mark.parametrize("readout", ["mean", "token"])
def test_branch_logits_are_the_chosen_readout_of_the_branch(readout):
    distiller = _tiny_vit_ofa(branch_readout=readout)
    stages = _stage_tokens(distiller)
    for stage in distiller.stages:
        layout, branch, h = distiller.student.layouts[stage - 1], distiller.branches[str(stage)], stages[stage - 1]
        assert layout.prefix_tokens == 1 and branch.class_token == (readout == "token")
        prefix, patches = h[:, :1], h[:, 1:].reshape(h.shape[0], *layout.grid, layout.channels)
        with torch.no_grad():
            merged = _merged_patches(branch, patches)
            if readout == "mean":  # the class token takes no part: the branch sees the patch tokens only
                expected = branch.fc(branch.blocks(merged).mean(dim=1))
            else:  # the class token attends with the merged patches and is read out
                expected = branch.fc(branch.blocks(torch.cat([prefix, merged], dim=1))[:, 0])
            got = distiller._branch_logits(stage, h)
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("readout, moves", [("mean", False), ("token", True)])
def test_the_class_token_reaches_the_branch_only_with_the_token_readout(readout, moves):
    distiller = _tiny_vit_ofa(branch_readout=readout)
    stages = _stage_tokens(distiller)
    for stage in distiller.stages:
        h = stages[stage - 1]
        shifted = h.clone()
        shifted[:, 0] += torch.randn(shifted[:, 0].shape, generator=torch.Generator().manual_seed(stage))
        with torch.no_grad():
            same = torch.equal(distiller._branch_logits(stage, h), distiller._branch_logits(stage, shifted))
        assert same != moves, (readout, stage)


def test_branch_readout_adds_no_parameters_and_is_validated():
    assert (_tiny_vit_ofa(branch_readout="mean").extra_parameters()
            == _tiny_vit_ofa(branch_readout="token").extra_parameters())
    with pytest.raises(TasError, match="branch_readout"):
        _tiny_vit_ofa(branch_readout="cls")


def test_students_without_a_class_token_always_read_the_mean():
    torch.manual_seed(0)
    teacher = create_model(CFG.models["tiny_cnn"], 10, 32)
    for student_id in ("tiny_mlp", "tiny_swin"):
        student = create_model(CFG.models[student_id], 10, 32)
        distiller = build_distiller("ofa", student, teacher, {**CFG.methods["ofa"].options, "branch_readout": "token"},
                                    10, make_criterion(0.0))
        assert not any(branch.class_token for branch in distiller.branches.values()), student_id
