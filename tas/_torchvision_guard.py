"""Let torchvision (and timm, which imports it) import on a CPU-only torch.

The only torchvision wheel that matches torch==2.13.0 is a CUDA build. On a CPU torch its compiled
extension fails to load, and `import torchvision` then dies registering fake kernels for ops that
were never defined ("operator torchvision::nms does not exist"). Defining the op schemas ourselves
lets the Python side import; tas uses none of torchvision's compiled ops (nms, roi_align, the JPEG
codecs), so nothing is lost. On a machine where the extension loads, this does nothing.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# The schemas torchvision's Python side registers fake kernels for at import time.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
        "SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
        "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
        "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
        "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
        "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

_library = None  # kept alive: dropping the Library object would unregister the schemas
extension_loaded: bool | None = None


def install() -> bool:
    """Make `import torchvision` safe. Returns True when torchvision's real extension loaded."""
    global _library, extension_loaded
    if extension_loaded is not None:
        return extension_loaded
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        extension_loaded = False
        return False
    if _torchvision_ops_defined():
        extension_loaded = True
        return True
    extension_loaded = _try_load_extension(spec.submodule_search_locations[0])
    if not extension_loaded and not _torchvision_ops_defined():
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    return extension_loaded


def _torchvision_ops_defined() -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return True
    except RuntimeError:
        return False


def _try_load_extension(package_dir: str) -> bool:
    for name in sorted(os.listdir(package_dir)):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(package_dir, name))
                return _torchvision_ops_defined()
            except (OSError, RuntimeError):
                return False
    return False
