"""Tests of tas.losses against hand-computed values and independent numpy references.

The numpy references below re-derive each loss from its published formula in float64 (DKD in the
original mdistiller style: probabilities, a -1000 target mask, log of probabilities), so they share
no code with the implementation under test.
"""

import math

import numpy as np
import pytest
import torch

from tas import losses as L

torch.manual_seed(0)


# ----------------------------------------------------------------------------- numpy references

def np_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kd(zs, zt, T):
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    return T * T * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))


def np_dkd_terms(zs, zt, y, T):
    # mdistiller's formulation, valid for moderate logits.
    B, C = zs.shape
    gt = np.zeros((B, C))
    gt[np.arange(B), y] = 1.0
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], axis=1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], axis=1)
    tckd = np.sum(bt * (np.log(bt) - np.log(bs))) / B * T * T
    ps2 = np_softmax(zs / T - 1000.0 * gt)
    pt2 = np_softmax(zt / T - 1000.0 * gt)
    mask = gt == 0  # target entries contribute 0 * log(0/0); drop them explicitly
    nckd = np.sum(np.where(mask, pt2 * (np.log(np.where(mask, pt2, 1))
                                        - np.log(np.where(mask, ps2, 1))), 0)) / B * T * T
    return tckd, nckd


def np_pearson(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8))


def np_dist(zs, zt, beta, gamma, T):
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    inter = 1 - np.mean([np_pearson(ps[i], pt[i]) for i in range(ps.shape[0])])
    intra = 1 - np.mean([np_pearson(ps[:, c], pt[:, c]) for c in range(ps.shape[1])])
    return T * T * (beta * inter + gamma * intra)


def np_ofa(zs, zt, y, eps, T):
    B, C = zs.shape
    m = np.zeros((B, C))
    m[np.arange(B), y] = 1.0
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    return np.mean(np.sum(-((pt + m) ** eps - m) * np.log(ps), axis=1))


def np_rsd(fs, ft, kappa):
    def std(f):
        f = np.asarray(f, dtype=np.float64)
        return (f - f.mean(0)) / (f.std(0) + 1e-5)  # RSD's code: epsilon on the (biased) std

    B, D = fs.shape
    C = std(ft).T @ std(fs) / B
    total = 0.0
    for i in range(D):
        for j in range(D):
            total += (C[i, j] - 1) ** 2 if i == j else kappa * C[i, j] ** 2
    return total


def t64(x):
    return torch.tensor(np.asarray(x), dtype=torch.float32)


# ----------------------------------------------------------------------------- hand-checkable cases

# teacher p = [1/2, 1/4, 1/4], student uniform
Z_T1 = np.log(np.array([[0.5, 0.25, 0.25]]))
Z_S1 = np.zeros((1, 3))


def test_kd_hand_value():
    # KL([1/2,1/4,1/4] || uniform) = 1/2 ln(3/2) + 1/2 ln(3/4) = 1/2 ln(9/8)
    got = L.kd(t64(Z_S1), t64(Z_T1), 1.0).item()
    assert got == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)


def test_kd_zero_for_equal_and_positive_otherwise():
    z = torch.randn(4, 7)
    assert L.kd(z, z.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert L.kd(torch.randn(4, 7), z, 2.0).item() > 1e-3


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_matches_numpy_with_T_squared(T):
    zs, zt = np.random.RandomState(1).randn(2, 5, 10) * 3
    got = L.kd(t64(zs), t64(zt), T).item()
    assert got == pytest.approx(np_kd(zs, zt, T), rel=1e-5)


def test_dkd_hand_values():
    zs, zt = t64(Z_S1), t64(Z_T1)
    # y = 0: TCKD = KL([1/2,1/2] || [1/3,2/3]) = 1/2 ln(9/8); non-targets identical -> NCKD = 0
    tckd, nckd = L.dkd_terms(zs, zt, torch.tensor([0]), 1.0)
    assert tckd.item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)
    # y = 1: TCKD = KL([1/4,3/4] || [1/3,2/3]); NCKD = KL([2/3,1/3] || [1/2,1/2])
    tckd, nckd = L.dkd_terms(zs, zt, torch.tensor([1]), 1.0)
    assert tckd.item() == pytest.approx(0.25 * math.log(0.75) + 0.75 * math.log(9 / 8), abs=1e-6)
    assert nckd.item() == pytest.approx(2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3), abs=1e-6)
    got = L.dkd(zs, zt, torch.tensor([1]), 1.0, 2.0, 1.0).item()
    assert got == pytest.approx(tckd.item() + 2 * nckd.item(), abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_matches_numpy_decomposition(T):
    rs = np.random.RandomState(2)
    zs, zt = rs.randn(2, 6, 8) * 2
    y = rs.randint(0, 8, size=6)
    tckd_ref, nckd_ref = np_dkd_terms(zs, zt, y, T)
    tckd, nckd = L.dkd_terms(t64(zs), t64(zt), torch.tensor(y), T)
    assert tckd.item() == pytest.approx(tckd_ref, rel=1e-4, abs=1e-6)
    assert nckd.item() == pytest.approx(nckd_ref, rel=1e-4, abs=1e-6)
    got = L.dkd(t64(zs), t64(zt), torch.tensor(y), 0.5, 3.0, T).item()
    assert got == pytest.approx(0.5 * tckd_ref + 3.0 * nckd_ref, rel=1e-4, abs=1e-6)


def test_dkd_nckd_ignores_target_logit_even_for_huge_logits():
    # NCKD only sees the non-target classes, so any change of the target logit leaves it unchanged;
    # a finite mask (mdistiller's -1000) would fail this at logit magnitude 1e4.
    g = torch.Generator().manual_seed(9)
    zs, zt = torch.randn(2, 4, 6, generator=g) * 1e4
    y = torch.tensor([1, 0, 5, 3])
    zs2 = zs.clone()
    zs2[torch.arange(4), y] += 3e4
    _, n1 = L.dkd_terms(zs, zt, y, 1.0)
    _, n2 = L.dkd_terms(zs2, zt, y, 1.0)
    assert torch.isfinite(n1) and n1.item() == pytest.approx(n2.item(), rel=1e-6)


def test_dkd_and_ofa_soft_labels_use_argmax():
    zs, zt = torch.randn(2, 5, 6)
    y = torch.tensor([0, 3, 5, 2, 1])
    soft = torch.full((5, 6), 0.05)
    soft[torch.arange(5), y] = 0.75
    assert L.dkd(zs, zt, soft, 1.0, 2.0, 2.0).item() == pytest.approx(L.dkd(zs, zt, y, 1.0, 2.0, 2.0).item(), rel=1e-6)
    assert L.ofa(zs, zt, soft, 1.5, 1.0).item() == pytest.approx(L.ofa(zs, zt, y, 1.5, 1.0).item(), rel=1e-6)


def test_dist_hand_value_anticorrelated():
    # 2 samples x 2 classes, student = teacher with classes swapped: every row and every column is
    # perfectly anti-correlated, so inter = intra = 2 and the loss is T^2 * (beta*2 + gamma*2).
    zt = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    zs = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert L.dist(zs, zt, 1.0, 1.0, 1.0).item() == pytest.approx(4.0, abs=1e-5)
    assert L.dist(zs, zt, 1.0, 0.5, 2.0).item() == pytest.approx(4.0 * (2 + 1), abs=1e-5)


def test_dist_zero_when_equal_and_matches_numpy():
    z = torch.randn(6, 9)
    assert L.dist(z, z.clone(), 1.0, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    rs = np.random.RandomState(3)
    zs, zt = rs.randn(2, 6, 9) * 2
    for beta, gamma, T in [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)]:
        got = L.dist(t64(zs), t64(zt), beta, gamma, T).item()
        assert got == pytest.approx(np_dist(zs, zt, beta, gamma, T), rel=1e-4)


def test_ofa_hand_values():
    zs, zt, y = t64(Z_S1), t64(Z_T1), torch.tensor([0])
    # eps=1: soft CE against p_t of a uniform student = ln 3
    assert L.ofa(zs, zt, y, 1.0, 1.0).item() == pytest.approx(math.log(3), abs=1e-6)
    # eps=2: weights (p_t + m)^2 - m = [1.25, 1/16, 1/16] -> 1.375 ln 3
    assert L.ofa(zs, zt, y, 2.0, 1.0).item() == pytest.approx(1.375 * math.log(3), abs=1e-6)


def test_ofa_eps1_is_soft_ce_and_eps15_matches_numpy():
    rs = np.random.RandomState(4)
    zs, zt = rs.randn(2, 5, 7) * 2
    y = rs.randint(0, 7, size=5)
    T = 2.0
    soft_ce = np.mean(np.sum(-np_softmax(zt / T) * np.log(np_softmax(zs / T)), axis=1))
    assert L.ofa(t64(zs), t64(zt), torch.tensor(y), 1.0, T).item() == pytest.approx(soft_ce, rel=1e-5)
    p_t = torch.softmax(t64(zt) / T, dim=1)
    assert L.ofa(t64(zs), t64(zt), torch.tensor(y), 1.0, T).item() == pytest.approx(
        L.soft_target_ce(t64(zs) / T, p_t).item(), rel=1e-5)
    for T in (1.0, 2.0):
        got = L.ofa(t64(zs), t64(zt), torch.tensor(y), 1.5, T).item()
        assert got == pytest.approx(np_ofa(zs, zt, y, 1.5, T), rel=1e-5)


def test_soft_target_ce():
    rs = np.random.RandomState(5)
    z = rs.randn(4, 5)
    y = np.array([0, 4, 2, 2])
    onehot = np.eye(5)[y]
    ref_hard = np.mean(-np.log(np_softmax(z))[np.arange(4), y])
    assert L.soft_target_ce(t64(z), torch.tensor(y)).item() == pytest.approx(ref_hard, rel=1e-5)
    assert L.soft_target_ce(t64(z), t64(onehot)).item() == pytest.approx(ref_hard, rel=1e-5)
    mix = 0.7 * onehot + 0.3 * np.eye(5)[[1, 1, 3, 0]]
    ref_soft = np.mean(np.sum(-mix * np.log(np_softmax(z)), axis=1))
    assert L.soft_target_ce(t64(z), t64(mix)).item() == pytest.approx(ref_soft, rel=1e-5)


# ----------------------------------------------------------------------------- InfoNCE

def test_info_nce_hand_value():
    # e_a = e_b = I_2: each CE row = -log(e^s / (e^s + 1)) = log(1 + e^-s)
    e = torch.eye(2)
    for s in (1.0, 3.0):
        assert L.info_nce(e, e, s).item() == pytest.approx(math.log1p(math.exp(-s)), abs=1e-6)


def test_info_nce_random_is_log_B_and_aligned_is_zero():
    B = 64
    g = torch.Generator().manual_seed(6)
    got = L.info_nce(torch.randn(B, 512, generator=g), torch.randn(B, 512, generator=g), 1.0).item()
    assert abs(got - math.log(B)) < 0.15 * math.log(B)
    e = torch.eye(B, 512) * 5.0  # norm is removed inside
    assert L.info_nce(e, e.clone(), 100.0).item() == pytest.approx(0.0, abs=1e-6)


def test_info_nce_learnable_scale_gets_gradient():
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    e_a, e_b = torch.randn(2, 8, 16)
    e_b.requires_grad_(True)
    loss = L.info_nce(e_a, e_b, log_scale.exp().clamp(max=100.0))
    loss.backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad) and log_scale.grad.abs() > 0
    assert e_b.grad is not None and e_b.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- RSD

def test_rsd_zero_for_identical_decorrelated_features():
    # Orthogonal, zero-mean columns with norm sqrt(B): standardised already and decorrelated, so
    # C = I up to the 1e-5 variance epsilon.
    B, D = 8, 4
    h = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                  [1, -1, 1, -1, 1, -1, 1, -1],
                  [1, 1, -1, -1, 1, 1, -1, -1],
                  [1, -1, -1, 1, 1, -1, -1, 1],
                  [1, 1, 1, 1, -1, -1, -1, -1]], dtype=np.float64)
    f = t64(h[1:].T)  # the 4 non-constant Hadamard rows: zero-mean, orthogonal
    assert f.shape == (B, D)
    assert L.rsd(f, f.clone(), 0.01).item() == pytest.approx(0.0, abs=1e-8)


def test_rsd_hand_value_and_numpy_reference():
    # two perfectly redundant dims of std 1: every C entry is c = 1 / (1 + 1e-5)^2
    f = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    c = 1 / (1 + 1e-5) ** 2
    assert L.rsd(f, f, 0.5).item() == pytest.approx(2 * (c - 1) ** 2 + 0.5 * 2 * c * c, rel=1e-5)
    rs = np.random.RandomState(7)
    fs, ft = rs.randn(2, 10, 6) * 3 + 1
    for kappa in (0.01, 1.0):
        assert L.rsd(t64(fs), t64(ft), kappa).item() == pytest.approx(np_rsd(fs, ft, kappa), rel=1e-4)


def test_rsd_rejects_width_mismatch():
    with pytest.raises(ValueError, match="same width"):
        L.rsd(torch.randn(4, 3), torch.randn(4, 5), 0.01)


# ----------------------------------------------------------------------------- FitNet hint

def test_fitnet_hint():
    h = torch.randn(2, 3, 4, 4)
    assert L.fitnet_hint(h, h.clone()).item() == 0.0
    # constant map upsampled stays constant: MSE = 2^2
    assert L.fitnet_hint(torch.full((1, 1, 1, 1), 2.0), torch.zeros(1, 1, 3, 3)).item() == pytest.approx(4.0)
    # exact 2x bilinear downsampling (align_corners=False) = average of 2x2 blocks
    hs = torch.randn(2, 3, 4, 4)
    ht = torch.randn(2, 3, 2, 2)
    blocks = hs.numpy().reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    ref = np.mean((blocks - ht.numpy()) ** 2)
    assert L.fitnet_hint(hs, ht).item() == pytest.approx(float(ref), rel=1e-5)


def test_fitnet_hint_rejects_tokens_and_channel_mismatch():
    with pytest.raises(ValueError, match="expected"):
        L.fitnet_hint(torch.randn(2, 16, 8), torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="expected"):
        L.fitnet_hint(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))


# ----------------------------------------------------------------------------- all losses: shape, grad, numerics

B_, C_, D_ = 6, 10, 12


def _cases(scale=1.0, dtype=torch.float32):
    """(name, fn(student_input) -> loss, student_input) for every loss."""
    g = torch.Generator().manual_seed(8)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    y = torch.randint(0, C_, (B_,), generator=g)
    soft = torch.softmax(torch.randn(B_, C_, generator=g), dim=1)
    zt, ft, ht = r(B_, C_), r(B_, D_), r(B_, 3, 4, 4)
    return [
        ("kd", lambda z: L.kd(z, zt, 4.0), r(B_, C_)),
        ("dkd", lambda z: L.dkd(z, zt, y, 1.0, 2.0, 1.0), r(B_, C_)),
        ("dkd_soft", lambda z: L.dkd(z, zt, soft, 1.0, 8.0, 4.0), r(B_, C_)),
        ("dist", lambda z: L.dist(z, zt, 1.0, 1.0, 1.0), r(B_, C_)),
        ("ofa", lambda z: L.ofa(z, zt, y, 1.5, 1.0), r(B_, C_)),
        ("ofa_soft", lambda z: L.ofa(z, zt, soft, 1.0, 1.0), r(B_, C_)),
        ("soft_target_ce", lambda z: L.soft_target_ce(z, soft), r(B_, C_)),
        ("ce", lambda z: L.soft_target_ce(z, y), r(B_, C_)),
        ("info_nce", lambda f: L.info_nce(ft, f, 14.0), r(B_, D_)),
        ("rsd", lambda f: L.rsd(f, ft, 0.01), r(B_, D_)),
        ("fitnet_hint", lambda h: L.fitnet_hint(h, ht), r(B_, 3, 2, 2)),
    ]


@pytest.mark.parametrize("idx", range(11))
def test_scalar_and_grad_flows_to_student(idx):
    name, fn, x = _cases()[idx]
    x.requires_grad_(True)
    loss = fn(x)
    assert loss.dim() == 0 and loss.dtype == torch.float32, name
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


@pytest.mark.parametrize("idx", range(11))
def test_finite_for_huge_logits(idx):
    name, fn, x = _cases(scale=1e4)[idx]
    x.requires_grad_(True)
    loss = fn(x)
    assert torch.isfinite(loss), name
    loss.backward()
    assert torch.isfinite(x.grad).all(), name


@pytest.mark.parametrize("idx", range(11))
def test_bf16_autocast_computes_in_float32(idx):
    name, fn, x = _cases(dtype=torch.bfloat16)[idx]
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss), name
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad.float()).all(), name
    # same bf16 inputs, no autocast: identical float32 computation
    ref = fn(x.detach())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), name


def test_bf16_huge_logits_under_autocast_finite():
    for name, fn, x in _cases(scale=1e4, dtype=torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(fn(x)), name
