"""Per-epoch running sums of the loss terms and top-1 hits, kept on the training device.

Reading a tensor back to the host (`float(t)`, `t.item()`, `if t:`) waits for the GPU to finish all
queued work, so a trainer that reads every loss term each step keeps the GPU idle between steps (a TAS
step has about ten terms). The meter adds each step's numbers into device tensors and records where a
term first became non-finite; the host reads them (`first_non_finite()`, `totals()`) only every few
steps and at the end of the epoch. The price: a step that went non-finite is noticed at the next read,
after a few more optimizer steps on weights that are already lost (never saved: the trainer reads
before every checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tas.errors import TasError


@dataclass(frozen=True)
class NonFiniteStep:
    step: int  # 0-based index within the epoch of the first step with a non-finite term
    terms: tuple[str, ...]  # the terms that were non-finite at that step

    @property
    def what(self) -> str:
        """The terms for a message; 'loss' when only their sum overflowed."""
        return ", ".join(self.terms) or "loss"


@dataclass(frozen=True)
class Totals:
    sums: dict[str, float]  # per term (and "loss"): sum over samples of the batch-mean value
    correct: int
    seen: int


class StepMeter:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        # float64 keeps a 400-step sum exact to the printed digits; MPS has no float64.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.names: tuple[str, ...] | None = None
        self._sums: torch.Tensor | None = None
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self._seen = 0
        self._bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self._bad_terms: torch.Tensor | None = None

    def add(self, step: int, terms: dict[str, torch.Tensor], loss: torch.Tensor, logits: torch.Tensor,
            target: torch.Tensor) -> None:
        """Accumulates one step without a host sync. `target`: the hard labels (before mixup)."""
        names = tuple(terms) + ("loss",)
        values = torch.stack([v.detach().reshape(()).to(self.dtype) for v in terms.values()]
                             + [loss.detach().reshape(()).to(self.dtype)])
        if self.names is None:
            self.names = names
            self._sums = torch.zeros(len(names), dtype=self.dtype, device=self.device)
            self._bad_terms = torch.zeros(len(names), dtype=torch.bool, device=self.device)
        elif names != self.names:
            raise TasError("the distiller's loss terms changed between steps "
                           f"({', '.join(self.names)} then {', '.join(names)}); "
                           "a distiller must return the same loss_* keys every step "
                           "(use a zero weight instead of dropping a term)")
        batch = logits.shape[0]
        self._sums += values * batch
        self._correct += (logits.detach().argmax(-1) == target).sum()
        self._seen += batch
        bad = ~torch.isfinite(values)
        first_bad = bad.any() & (self._bad_step < 0)
        self._bad_terms = torch.where(first_bad, bad, self._bad_terms)
        self._bad_step = torch.where(first_bad, torch.full_like(self._bad_step, step), self._bad_step)

    def first_non_finite(self) -> NonFiniteStep | None:
        """Syncs once; None while every term of every step so far was finite."""
        step = int(self._bad_step)
        if step < 0:
            return None
        flags = self._bad_terms.tolist()
        terms = tuple(name for name, bad in zip(self.names, flags) if bad and name != "loss")
        return NonFiniteStep(step=step, terms=terms)

    def totals(self) -> Totals:
        """Syncs once."""
        sums = dict(zip(self.names, self._sums.tolist())) if self.names else {}
        return Totals(sums=sums, correct=int(self._correct), seen=self._seen)
