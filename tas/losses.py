"""Distillation losses of TAS and its baselines (METHOD.md section 3).

Pure functions of tensors: no configuration, no state. Every loss returns a 0-dim tensor averaged
over the batch.

Numerics, shared by every function:
- inputs are cast to float32 and autocast is switched off inside, so a loss called from a bf16/fp16
  autocast region still computes its softmaxes, matmuls and reductions in float32;
- probabilities only ever enter a logarithm as ``log_softmax`` / ``logsumexp`` outputs, never as
  ``log(softmax(...))``, so the losses stay finite for logits of magnitude 1e4 (where softmax
  underflows to exact zeros).

Labels ``y`` may be integer class indices (B,) or soft labels (B, C) (mixup / cutmix); the losses
that need a target class (DKD, OFA) take ``argmax`` of soft labels.
"""

from __future__ import annotations

import functools
from typing import Union

import torch
import torch.nn.functional as F

__all__ = [
    "soft_target_ce",
    "kd",
    "dkd_terms",
    "dkd",
    "dist",
    "ofa",
    "info_nce",
    "rsd",
    "fitnet_hint",
]

_RSD_EPS = 1e-5
_PEARSON_EPS = 1e-8


def _fp32(fn):
    """Run ``fn`` with autocast disabled on the device of its first tensor argument.

    Casting inputs with ``.float()`` is not enough on its own: under autocast, matmul / linear
    would be re-cast to the low-precision dtype inside the function.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device_type = "cpu"
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor):
                device_type = a.device.type
                break
        if device_type == "meta":  # shapes only (describe's FLOP count): no autocast exists there
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _check_logits(z_s: torch.Tensor, z_t: torch.Tensor, name: str) -> None:
    if z_s.dim() != 2 or z_s.shape != z_t.shape:
        raise ValueError(
            f"{name}: expected student and teacher logits of the same shape (B, C), "
            f"got {tuple(z_s.shape)} and {tuple(z_t.shape)}"
        )


def _hard_labels(y: torch.Tensor, batch: int, num_classes: int, name: str) -> torch.Tensor:
    """Integer targets (B,) from integer labels (B,) or soft labels (B, C) (argmax)."""
    if y.dim() == 2:
        if y.shape != (batch, num_classes):
            raise ValueError(
                f"{name}: soft labels must be (B, C) = ({batch}, {num_classes}), got {tuple(y.shape)}"
            )
        return y.argmax(dim=1)
    if y.dim() == 1 and y.shape[0] == batch:
        return y.long()
    raise ValueError(f"{name}: labels must be (B,) integers or (B, C) soft labels, got {tuple(y.shape)}")


@_fp32
def soft_target_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with integer (B,) or soft (B, C) targets, batch mean.

    soft: mean_i  -sum_c y[i,c] * log_softmax(z)[i,c];  integer: the usual CE.
    """
    z = z.float()
    if y.dim() == 1:
        return F.cross_entropy(z, y.long())
    if y.shape != z.shape:
        raise ValueError(f"soft_target_ce: soft labels {tuple(y.shape)} do not match logits {tuple(z.shape)}")
    return -(y.float() * F.log_softmax(z, dim=1)).sum(dim=1).mean()


@_fp32
def kd(z_s: torch.Tensor, z_t: torch.Tensor, T: float) -> torch.Tensor:
    """Hinton KD: T^2 * mean_i KL(softmax(z_t/T) || softmax(z_s/T))."""
    _check_logits(z_s, z_t, "kd")
    log_p_s = F.log_softmax(z_s.float() / T, dim=1)
    log_p_t = F.log_softmax(z_t.float() / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (T * T)


def _binary_log_probs(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """log [p_gt, 1 - p_gt] of softmax(z), (B, 2), computed without forming 1 - p.

    log(1 - p_gt) = logsumexp(non-target logits) - logsumexp(all logits) stays finite and keeps the
    non-target mass (and its gradient) when p_gt rounds to 1 in float32, where clamp-then-log would
    replace it by log(eps) with zero gradient.
    """
    lse_all = torch.logsumexp(z, dim=1)
    log_gt = z.gather(1, gt[:, None]).squeeze(1) - lse_all
    others = z.masked_fill(F.one_hot(gt, z.shape[1]).bool(), float("-inf"))
    log_other = torch.logsumexp(others, dim=1) - lse_all
    return torch.stack([log_gt, log_other], dim=1)


def _drop_target(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C-1) without the target column.

    Removing the column is the exact limit of mdistiller's "-1000 * gt_mask" trick, and stays exact
    for logits of magnitude 1e4 where a -1000 offset would not hide the target.
    """
    # column j of the result is class j, or j + 1 from the target on: a gather of fixed shape (a boolean
    # mask would need its count of true entries, a host sync on a GPU and no answer on the meta device)
    others = torch.arange(z.shape[1] - 1, device=z.device).expand(z.shape[0], -1)
    return z.gather(1, others + (others >= gt[:, None]).long())


@_fp32
def dkd_terms(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float):
    """The two DKD terms (TCKD, NCKD), each T^2 * batch-mean KL(teacher || student).

    TCKD: binary KL between [p_gt, 1 - p_gt]; NCKD: KL between the softmaxes over the non-target
    classes only.
    """
    _check_logits(z_s, z_t, "dkd")
    B, C = z_s.shape
    if C < 2:
        raise ValueError(f"dkd: needs at least 2 classes, got {C}")
    gt = _hard_labels(y, B, C, "dkd").to(z_s.device)
    zs = z_s.float() / T
    zt = z_t.float() / T
    tckd = F.kl_div(
        _binary_log_probs(zs, gt), _binary_log_probs(zt, gt), log_target=True, reduction="batchmean"
    ) * (T * T)
    nckd = F.kl_div(
        F.log_softmax(_drop_target(zs, gt), dim=1),
        F.log_softmax(_drop_target(zt, gt), dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (T * T)
    return tckd, nckd


def dkd(z_s, z_t, y, alpha: float, beta: float, T: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD (see ``dkd_terms``)."""
    tckd, nckd = dkd_terms(z_s, z_t, y, T)
    return alpha * tckd + beta * nckd


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of matching rows: cosine of the row-centred vectors, eps in the denominator."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + _PEARSON_EPS)


@_fp32
def dist(z_s: torch.Tensor, z_t: torch.Tensor, beta: float, gamma: float, T: float) -> torch.Tensor:
    """DIST (Huang et al. 2022), p = softmax(z/T):
    T^2 * (beta * (1 - mean_i pearson(p_s[i,:], p_t[i,:])) + gamma * (1 - mean_c pearson(p_s[:,c], p_t[:,c]))).
    """
    _check_logits(z_s, z_t, "dist")
    p_s = F.softmax(z_s.float() / T, dim=1)
    p_t = F.softmax(z_t.float() / T, dim=1)
    inter = 1.0 - _pearson_rows(p_s, p_t).mean()
    intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()
    return (T * T) * (beta * inter + gamma * intra)


@_fp32
def ofa(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, eps: float, T: float) -> torch.Tensor:
    """OFA target-enhanced loss, p = softmax(z/T), m = onehot(y):
    mean_i sum_c -((p_t + m)^eps - m) * log p_s.   (eps = 1: soft CE against p_t; no T^2 factor,
    as in OFA's code.)
    """
    _check_logits(z_s, z_t, "ofa")
    B, C = z_s.shape
    gt = _hard_labels(y, B, C, "ofa").to(z_s.device)
    m = F.one_hot(gt, C).float()
    log_p_s = F.log_softmax(z_s.float() / T, dim=1)
    p_t = F.softmax(z_t.float() / T, dim=1)
    weight = (p_t + m).pow(eps) - m
    return -(weight * log_p_s).sum(dim=1).mean()


@_fp32
def info_nce(e_a: torch.Tensor, e_b: torch.Tensor, scale: Union[float, torch.Tensor]) -> torch.Tensor:
    """Symmetric in-batch InfoNCE: logits = scale * norm(e_a) @ norm(e_b)^T,
    loss = (CE(logits, arange B) + CE(logits^T, arange B)) / 2. Row i of e_a and e_b is the positive.
    """
    if e_a.dim() != 2 or e_a.shape != e_b.shape:
        raise ValueError(
            f"info_nce: expected two (B, D) embeddings of the same shape, got {tuple(e_a.shape)} and {tuple(e_b.shape)}"
        )
    a = F.normalize(e_a.float(), dim=1)
    b = F.normalize(e_b.float(), dim=1)
    if isinstance(scale, torch.Tensor):
        scale = scale.float()
    logits = scale * (a @ b.t())
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@_fp32
def rsd(f_s: torch.Tensor, f_t: torch.Tensor, kappa: float) -> torch.Tensor:
    """Redundancy suppression: standardise each dim over the batch, f_n = (f - mean) / (std + 1e-5)
    (biased std, the epsilon added to the std as RSD's code does), C = f_t_n^T f_s_n / B,
    loss = sum_i (C_ii - 1)^2 + kappa * sum_{i!=j} C_ij^2.
    """
    if f_s.dim() != 2 or f_t.dim() != 2:
        raise ValueError(f"rsd: expected (B, D) features, got {tuple(f_s.shape)} and {tuple(f_t.shape)}")
    if f_s.shape[1] != f_t.shape[1]:
        raise ValueError(
            f"rsd: student and teacher features must have the same width D (project them first), "
            f"got D_s={f_s.shape[1]} and D_t={f_t.shape[1]}"
        )
    if f_s.shape[0] != f_t.shape[0]:
        raise ValueError(f"rsd: batch sizes differ: {f_s.shape[0]} vs {f_t.shape[0]}")

    def standardise(f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        mean = f.mean(dim=0, keepdim=True)
        std = f.std(dim=0, unbiased=False, keepdim=True)
        return (f - mean) / (std + _RSD_EPS)

    B = f_s.shape[0]
    c = standardise(f_t).t() @ standardise(f_s) / B
    diag = torch.diagonal(c)
    on = (diag - 1.0).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + kappa * off


@_fp32
def fitnet_hint(h_s: torch.Tensor, h_t: torch.Tensor) -> torch.Tensor:
    """FitNet hint: mean((resize(h_s) - h_t)^2) for (B, C, H, W) maps; h_s is resized bilinearly
    (align_corners=False) to h_t's spatial size when they differ. Channel regression and
    token-to-grid reshaping are the caller's job.
    """
    if h_s.dim() != 4 or h_t.dim() != 4 or h_s.shape[:2] != h_t.shape[:2]:
        raise ValueError(
            "fitnet_hint: expected (B, C, H_s, W_s) and (B, C, H_t, W_t) maps with the same B and C, "
            f"got {tuple(h_s.shape)} and {tuple(h_t.shape)}"
        )
    s = h_s.float()
    t = h_t.float()
    if s.shape[-2:] != t.shape[-2:]:
        s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(s, t)
