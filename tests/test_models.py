"""tas.models: every model id of params.yaml as a four-stage StageView, and checkpoint loading.

References are timm's own public API (`model.forward`, `forward_intermediates`, `forward_features` /
`forward_head`, `feature_info`, `pretrained_cfg`), never the view's own code. Each model is built once
per module: the `built` fixture is module-scoped and parametrized, so pytest groups every test of one
model id together and drops the model before building the next.

Image size per model id: the image size of the protocol of every experiment that uses the id (they
must agree); an id no experiment uses takes its `img_size` kwarg, else timm's pretrained_cfg.
"""

from __future__ import annotations

import tas  # noqa: F401  (installs the torchvision guard; must precede `import timm`)

from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import get_pretrained_cfg
from timm.models.convnext import ConvNeXt
from timm.models.efficientnet import EfficientNet
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnet import ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

import tas.models  # noqa: F401  (registers our timm entry points)
from tas.config import ModelSpec, load_config
from tas.errors import TasError
from tas.models import create_model
from tas.models.stages import from_map, stage_end_modules, to_map
from tas.models.weights import load_weights, read_state_dict

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")
NUM_CLASSES = 10
BATCH = 2

# The timm class of each family (independent of tas.models.stages._ADAPTERS).
FAMILY_OF_CLASS = {ResNet: "cnn", EfficientNet: "cnn", ConvNeXt: "cnn", SwinTransformer: "swin",
                   VisionTransformer: "vit", MlpMixer: "mlp"}
LAYOUT_OF_FAMILY = {"cnn": "map", "swin": "nhwc", "vit": "tokens", "mlp": "tokens"}
# OFA's convention for isotropic models (METHOD.md s.1): stage ends at blocks 1, 3, 9, 11 of 12; the
# 6-block tiny members end at blocks 1, 2, 5, 6 (1-based; tas/models/entrypoints.py).
ISOTROPIC_ENDS = {12: [1, 3, 9, 11], 6: [0, 1, 4, 5]}
# The heaviest stock models at 224 px: marked slow, still run by default.
HEAVY = {"swin_t", "vit_s", "mixer_b16", "convnext_t", "r50"}


def _image_size(model_id: str) -> int:
    spec = CFG.models[model_id]
    sizes = set()
    for exp in CFG.experiments.values():
        used = set(exp.teachers) | {p.teacher for p in exp.pairs} | {p.student for p in exp.pairs}
        if model_id in used:
            sizes.add(CFG.protocol_of(exp).augment.image_size)
    assert len(sizes) <= 1, f"{model_id} is used at several image sizes: {sizes}"
    declared = spec.kwargs.get("img_size") or get_pretrained_cfg(spec.timm).input_size[-1]
    if sizes:
        size = sizes.pop()
        if "img_size" in spec.kwargs:
            assert spec.kwargs["img_size"] == size, f"{model_id}: kwargs img_size disagrees with its protocol"
        return size
    return declared


IMAGE_SIZE = {model_id: _image_size(model_id) for model_id in CFG.models}
MODEL_PARAMS = [pytest.param(m, id=m, marks=[pytest.mark.slow] if m in HEAVY else []) for m in CFG.models]


def test_image_size_partition_matches_the_protocols():
    # The brief's partition: the mini / cifar32 ids at 32 px, the stock ids at 224.
    small = {m for m, s in IMAGE_SIZE.items() if s == 32}
    large = {m for m, s in IMAGE_SIZE.items() if s == 224}
    assert small | large == set(CFG.models)
    assert {"tiny_cnn", "tiny_vit", "tiny_swin", "tiny_mlp", "tiny_convnext", "convnext_t32", "r18_32",
            "swin_p32"} <= small
    assert {"swin_t", "r18", "vit_s", "mbv2", "mixer_b16", "convnext_t", "deit_t", "resmlp_s12", "swin_p", "r50",
            "swin_n"} <= large


def _randomise_zero_weights(model: nn.Module) -> None:
    """timm zero-initialises some weights (Mixer heads, ResNet last-BN gammas): with them every model
    gives the same logits and an equality check would prove nothing."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith("bias") and not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


@dataclass
class Built:
    model_id: str
    spec: ModelSpec
    size: int
    view: object
    x: torch.Tensor
    knowledge: object
    reference_logits: torch.Tensor


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=MODEL_PARAMS)
def built(request) -> Built:
    model_id = request.param
    spec, size = CFG.models[model_id], IMAGE_SIZE[model_id]
    torch.manual_seed(0)
    view = create_model(spec, NUM_CLASSES, size)
    _randomise_zero_weights(view.model)
    view.eval()
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        knowledge = view(x)
        reference = view.model(x)
    assert reference.abs().max() > 1e-3, "degenerate logits: the equality checks below would be vacuous"
    return Built(model_id, spec, size, view, x, knowledge, reference)


# ------------------------------------------------------------------------------- stage view


def test_family_matches_params_and_timm_class(built):
    view = built.view
    expected = next(fam for cls, fam in FAMILY_OF_CLASS.items() if isinstance(view.model, cls))
    assert view.family == built.spec.family == expected
    assert view.is_convolutional == (expected == "cnn")
    assert view.num_classes == NUM_CLASSES


def test_logits_equal_model_forward(built):
    assert built.knowledge.logits.shape == (BATCH, NUM_CLASSES)
    torch.testing.assert_close(built.knowledge.logits, built.reference_logits, atol=1e-4, rtol=0)


def _expected_stage_ends(model: nn.Module) -> list[str]:
    if isinstance(model, (VisionTransformer, MlpMixer)):
        depth = len(model.blocks)
        return [f"blocks.{i}" for i in ISOTROPIC_ENDS[depth]]
    return [info["module"] for info in model.feature_info][-4:]


def test_stage_outputs_equal_forward_intermediates(built):
    view, model = built.view, built.view.model
    ends = _expected_stage_ends(model)
    assert view.stage_names == ends
    with torch.no_grad():
        if isinstance(model, (VisionTransformer, MlpMixer)):
            final, intermediates = model.forward_intermediates(built.x, indices=[int(n.split(".")[1]) for n in ends])
        else:
            final, intermediates = model.forward_intermediates(built.x, indices=4)
        pooled = model.forward_head(final, pre_logits=True)
        logits = model.forward_head(final)
    assert len(intermediates) == 4 and len(built.knowledge.stages) == 4
    for index, (h, reference) in enumerate(zip(built.knowledge.stages, intermediates)):
        as_map = view.to_map(h, index)
        assert as_map.shape == reference.shape, f"stage {index + 1}"
        torch.testing.assert_close(as_map, reference, atol=1e-4, rtol=0, msg=f"stage {index + 1}")
    torch.testing.assert_close(built.knowledge.feature, pooled, atol=1e-4, rtol=0)
    torch.testing.assert_close(built.knowledge.logits, logits, atol=1e-4, rtol=0)


def test_layouts_are_consistent_with_the_tensors(built):
    view, model, size = built.view, built.view.model, built.size
    reductions = {info["module"]: info["reduction"] for info in model.feature_info}
    assert len(view.layouts) == 4
    for index, (h, layout) in enumerate(zip(built.knowledge.stages, view.layouts)):
        assert layout.kind == LAYOUT_OF_FAMILY[view.family]
        side = size // reductions[view.stage_names[index]]
        assert layout.grid == (side, side), f"stage {index + 1}: grid {layout.grid}, feature_info says {side}"
        height, width = layout.grid
        if layout.kind == "map":
            assert h.shape == (BATCH, layout.channels, height, width)
            assert layout.prefix_tokens == 0
        elif layout.kind == "nhwc":
            assert h.shape == (BATCH, height, width, layout.channels)
            assert layout.prefix_tokens == 0
        else:
            assert layout.prefix_tokens == getattr(model, "num_prefix_tokens", 0)
            assert h.shape == (BATCH, layout.prefix_tokens + height * width, layout.channels)
        as_map = to_map(h, layout)
        assert as_map.shape == (BATCH, layout.channels, height, width)
        # from_map is to_map's inverse on the patch part
        patch_part = h[:, layout.prefix_tokens:] if layout.kind == "tokens" else h
        assert torch.equal(from_map(as_map, layout), patch_part)
    assert view.layouts[3].channels == built.knowledge.stages[3].shape[-1 if view.layouts[3].kind != "map" else 1]


def test_feature_dim_is_the_pooled_feature_width(built):
    # The values of f are checked against timm's forward_head(pre_logits=True) in the intermediates test.
    model = built.view.model
    assert built.knowledge.feature.shape == (BATCH, built.view.feature_dim)
    assert model.get_classifier().in_features == built.view.feature_dim


def test_view_state_dict_does_not_duplicate_the_stage_modules(built):
    view_keys = set(built.view.state_dict())
    assert view_keys == {f"model.{k}" for k in built.view.model.state_dict()}
    assert sum(1 for _ in built.view.parameters()) == sum(1 for _ in built.view.model.parameters())


# ------------------------------------------------------------------------------- checkpoints


def _classifier_keys(model: nn.Module) -> list[str]:
    name = model.pretrained_cfg["classifier"]
    head = model.get_submodule(name)
    assert head is model.get_classifier()
    return sorted(f"{name}.{p}" for p, _ in head.named_parameters())


def _fresh(built: Built) -> nn.Module:
    torch.manual_seed(123)
    model = timm.create_model(built.spec.timm, num_classes=NUM_CLASSES, **dict(built.spec.kwargs))
    return model.eval()


def _perturb(model: nn.Module) -> None:
    """Change every saved float tensor (parameters and persistent buffers) in place."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.mul_(1.1).add_(0.01)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


WRAPPERS = {
    "plain": lambda view: view.model.state_dict(),
    "state_dict": lambda view: {"state_dict": view.model.state_dict()},
    "model+module.": lambda view: {"model": {f"module.{k}": v for k, v in view.model.state_dict().items()}, "epoch": 3},
    "stageview": lambda view: view.state_dict(),  # keys prefixed by `model.`, as tas itself saves
}


def _styles(built: Built) -> list[str]:
    """Every wrapper style on models under 6M parameters; one (rotating) style on the big ones."""
    if sum(p.numel() for p in built.view.model.parameters()) < 6_000_000:
        return list(WRAPPERS)
    return [list(WRAPPERS)[list(CFG.models).index(built.model_id) % len(WRAPPERS)]]


def test_checkpoint_round_trip(built, tmp_path):
    fresh = _fresh(built)
    for style in _styles(built):
        wrap = WRAPPERS[style]
        _perturb(fresh)
        assert not torch.allclose(_logits(fresh, built.x), built.reference_logits, atol=1e-4), (
            "load would prove nothing")
        path = tmp_path / f"{style}.pt"
        torch.save(wrap(built.view), path)
        assert load_weights(fresh, path) == [], style
        torch.testing.assert_close(_logits(fresh, built.x), built.reference_logits, atol=1e-6, rtol=0, msg=style)
        path.unlink()


def test_checkpoint_with_1000_classes_needs_replace_head(built, tmp_path):
    model = built.view.model
    keys = _classifier_keys(model)
    state = dict(model.state_dict())
    gen = torch.Generator().manual_seed(3)
    for key in keys:
        state[key] = torch.randn((1000,) + tuple(state[key].shape[1:]), generator=gen)
    path = tmp_path / "imagenet.pt"
    torch.save({"state_dict": state}, path)
    del state

    fresh = _fresh(built)
    before = _logits(fresh, built.x)
    with pytest.raises(TasError, match=r"1000 classes.*replace_head"):
        load_weights(fresh, path)
    torch.testing.assert_close(_logits(fresh, built.x), before, atol=0, rtol=0,
                               msg="a refused load must not touch the model")

    head_before = {k: v.clone() for k, v in fresh.state_dict().items() if k in keys}
    assert sorted(load_weights(fresh, path, replace_head=True)) == keys
    with torch.no_grad():
        features = fresh.forward_head(fresh.forward_features(built.x), pre_logits=True)
    torch.testing.assert_close(features, built.knowledge.feature, atol=1e-5, rtol=0)
    own = fresh.state_dict()
    for key in keys:
        assert own[key].shape[0] == NUM_CLASSES
        assert torch.equal(own[key], head_before[key]), f"{key} should keep the model's own (re-initialised) head"


# ------------------------------------------------------------------------------- stage ends, Swin-P


def test_stage_end_modules_of_a_12_block_vit_mixer_and_resmlp():
    vit = timm.create_model("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, num_heads=2,
                            depth=12, num_classes=0)
    mixer = timm.create_model("mixer_b4_32", embed_dim=32, num_classes=0)
    resmlp = timm.create_model("resmlp_12_patch4_32", embed_dim=32, num_classes=0)
    for model in (vit, mixer, resmlp):
        assert len(model.blocks) == 12
        assert stage_end_modules(model) == ["blocks.1", "blocks.3", "blocks.9", "blocks.11"]


def test_mobilenetv2_stage_ends_are_feature_infos_last_four():
    model = timm.create_model("mobilenetv2_100", num_classes=NUM_CLASSES)
    names = [info["module"] for info in model.feature_info]
    assert stage_end_modules(model) == names[-4:] == ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]
    # METHOD.md s.1: in timm's flat block numbering the groups end at blocks 2, 5, 12 and the 17th (last).
    group_sizes = [len(group) for group in model.blocks]
    flat_last = [sum(group_sizes[: int(n.split(".")[1]) + 1]) - 1 for n in stage_end_modules(model)]
    assert flat_last == [2, 5, 12, 16] and sum(group_sizes) == 17


def test_cifar_variants_keep_stock_stage_ends():
    assert (stage_end_modules(timm.create_model("mobilenetv2_100_cifar"))
            == ["blocks.1", "blocks.2", "blocks.4", "blocks.6"])
    assert stage_end_modules(timm.create_model("resnet18_cifar")) == ["layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize("name, embed", [("swin_pico_patch4_window7_224", 48), ("swin_nano_patch4_window7_224", 64)])
def test_swin_pico_and_nano_hyperparameters(name, embed):
    model = timm.create_model(name, num_classes=NUM_CLASSES)
    assert model.patch_embed.proj.out_channels == embed
    assert [len(layer.blocks) for layer in model.layers] == [2, 2, 2, 2]
    assert [layer.blocks[0].attn.num_heads for layer in model.layers] == [2, 4, 8, 16]
    assert model.num_features == embed * 8
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


# ------------------------------------------------------------------------------- factory errors


def _spec(**changes) -> ModelSpec:
    base = dict(id="probe", timm="tas_tiny_vit", family="vit", name="Probe", kwargs={})
    base.update(changes)
    return ModelSpec(**base)


def test_create_model_rejects_an_unknown_timm_name():
    with pytest.raises(TasError, match=r"models\.probe\.timm: 'no_such_net' is not a timm model"):
        create_model(_spec(timm="no_such_net"), NUM_CLASSES, 32)


def test_create_model_rejects_a_wrong_family():
    with pytest.raises(TasError, match=r"models\.probe\.family is 'cnn'.*set family: vit"):
        create_model(_spec(family="cnn"), NUM_CLASSES, 32)


def test_create_model_rejects_an_unknown_kwarg():
    with pytest.raises(TasError, match=r"models\.probe\.kwargs"):
        create_model(_spec(kwargs={"no_such_arg": 1}), NUM_CLASSES, 32)


def test_create_model_rejects_an_image_size_the_model_cannot_run():
    with pytest.raises(TasError, match=r"cannot run at 48 px"):
        create_model(_spec(), NUM_CLASSES, 48)


def test_create_model_passes_drop_path():
    view = create_model(_spec(), NUM_CLASSES, 32, drop_path=0.1)
    assert view.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def _stochastic_depth(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "drop_prob", 0)
            or (isinstance(m, nn.Dropout) and m.p)]


def test_no_stochastic_depth_unless_asked(built):
    # create_model(drop_path=0.0) is what a recipe without drop_path asks for
    assert _stochastic_depth(built.view.model) == []


@pytest.mark.parametrize("model_id", ["tiny_swin", "swin_p32", "swin_t32"])
def test_swin_gets_no_hidden_drop_path(model_id):
    view = create_model(CFG.models[model_id], NUM_CLASSES, IMAGE_SIZE[model_id], drop_path=0.0)
    assert _stochastic_depth(view.model) == []


# ------------------------------------------------------------------------------- bad checkpoint files


@pytest.fixture(scope="module")
def small_model():
    return timm.create_model("tas_tiny_resnet", num_classes=NUM_CLASSES)


def _valid_bytes(model: nn.Module, path: Path) -> bytes:
    torch.save({"model": model.state_dict()}, path)
    return path.read_bytes()


BAD_FILES = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "json": lambda good: b'{"epoch": 3}\n',
    "random-bytes": lambda good: bytes(range(256)) * 16,
    "text": lambda good: b"hello world\n",
    "csv": lambda good: b"epoch,loss\n1,0.5\n",
}
# torch.load raises KeyError / IndexError on "text" and "csv": they must still become one TasError line.
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_corrupt_or_foreign_checkpoint_raises_a_clear_tas_error(kind, small_model, tmp_path):
    good = _valid_bytes(small_model, tmp_path / "good.pt")
    path = tmp_path / "bad.pt"
    path.write_bytes(BAD_FILES[kind](good))
    with pytest.raises(TasError) as info:
        load_weights(small_model, path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "truncated or not a weights-only PyTorch file" in message


def test_missing_checkpoint_raises(small_model, tmp_path):
    with pytest.raises(TasError, match=r"not found"):
        load_weights(small_model, tmp_path / "nope.pt")


def test_checkpoint_without_tensors_raises(small_model, tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(TasError, match=r"holds no state dict"):
        read_state_dict(path)


def test_pickled_module_is_refused_not_executed(small_model, tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)  # a pickled object, not weights: weights_only must refuse it
    with pytest.raises(TasError, match=r"not a weights-only PyTorch file"):
        load_weights(small_model, path)


def test_checkpoint_of_another_architecture_raises(small_model, tmp_path):
    other = timm.create_model("resnet18_cifar", num_classes=NUM_CLASSES)
    path = tmp_path / "r18.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(TasError, match=r"does not fit"):
        load_weights(small_model, path)
    vit = timm.create_model("tas_tiny_vit", num_classes=NUM_CLASSES)
    torch.save(vit.state_dict(), path)
    with pytest.raises(TasError, match=r"keys for ResNet.*another architecture"):
        load_weights(small_model, path)
