"""FLOPs of one training step of a distiller (forward of the summed `loss_*` terms, then backward), counted
with torch.utils.flop_counter; `describe` runs it on the meta device (shapes only).

`training_flops` counts one distiller's step alone. `PairSteps` counts the steps of all the methods of one
pair and does each pass the methods share once: the teacher's forward and the student's forward, and the
student's backward for each set of its outputs a method sends gradients to. Those passes are the same
computation in every method (the same modules, input shape, train/grad mode), so their count is the same
too: a repeat adds the count recorded the first time instead of running the pass again (on the meta
device each pass costs a tenth of a second or more of Python dispatch, and a pair has up to 8 methods).
The methods' own modules run every time. How the split keeps the total exact:
- a shared forward is only taken when its input carries no autograd graph, so the pass is self-contained;
- a method gets the student's outputs as fresh leaf tensors: its backward stops there, and the student's
  own backward runs afterwards from those leaves' gradients, over the same autograd nodes (each node runs
  once in a backward, however many gradients reach it, and FLOPs are a function of the shapes);
- a pass repeated within one step (a model called twice) is counted as often as it is called.
A step the split cannot run (a method that writes into the student's outputs in place) is counted alone.
tests/test_describe.py checks the sum against counting each method alone.
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode


@contextmanager
def dynamo_deferred() -> Iterator[None]:
    """While it is open, torch's own `_disable_dynamo` wrappers do not import torch._dynamo.

    The meta device runs Python references (torch._refs, torch._prims) wrapped in torch._disable_dynamo,
    whose first call imports torch._dynamo (about 1.3 CPU-seconds, more than the counting itself) only to
    mark the function as not to be compiled. Nothing is compiled while describe counts, so a stand-in
    `torch._dynamo.disable` hands each function back unchanged. On leaving, the stand-in goes and so do the
    marks it left (`fn.__dynamo_disable`), so a later call, and torch.compile, get the real torch._dynamo
    (tas._deferred_dynamo does the same for the imports of timm and torchvision)."""
    if "torch._dynamo" in sys.modules:  # already imported: nothing to save
        yield
        return
    seen: list = []

    def disable(fn=None, recursive=True, *, wrapping=True, reason=None):
        seen.append(fn)
        return fn

    stand_in = types.ModuleType("torch._dynamo", "stand-in while describe counts (tas.stepflops)")
    stand_in.disable = disable
    sys.modules["torch._dynamo"] = stand_in
    torch._dynamo = stand_in
    try:
        yield
    finally:
        if sys.modules.get("torch._dynamo") is stand_in:
            del sys.modules["torch._dynamo"]
        if torch.__dict__.get("_dynamo") is stand_in:
            del torch._dynamo
        for fn in seen:
            if getattr(fn, "__dict__", {}).get("__dynamo_disable") is fn:
                del fn.__dynamo_disable


class _Totals:
    """Stands in for FlopCounterMode's module tracker: every count goes to the total ("Global") alone."""

    parents = ("Global",)

    def __enter__(self) -> "_Totals":
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Counter(FlopCounterMode):
    """FlopCounterMode without the per-module table describe never reads: its module tracker hooks every
    module call and every gradient (a third of the counting time on meta); the total is the same
    (tests/test_describe.py compares it with FlopCounterMode's)."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _Totals()


def training_flops(distiller, size: int, classes: int, batch: int) -> int:
    """FLOPs of one training step per image: a batch of `batch` zero images, labels 0..batch-1."""
    return PairSteps(None, None).training_flops(distiller, size, classes, batch)


class PairSteps:
    """Counts the training steps of distillers built on the same `teacher` and `student` (module
    instances); the passes the methods share are counted once (module docstring)."""

    def __init__(self, teacher: torch.nn.Module | None, student: torch.nn.Module | None) -> None:
        self._models = [m for m in (teacher, student) if m is not None]
        self._forwards: dict[tuple, tuple[Any, int]] = {}  # (model, input key) -> (outputs, FLOPs)
        self._backwards: dict[tuple, int] = {}  # what a backward of a shared pass runs -> FLOPs
        self.alone = 0  # steps the split could not run, counted alone

    def training_flops(self, distiller, size: int, classes: int, batch: int) -> int:
        distiller.train()
        device = next(distiller.parameters()).device
        x = torch.zeros(batch, 3, size, size, device=device)
        y = torch.arange(batch, device=device) % classes
        if self._models:
            try:
                return self._step(distiller, x, y, shared=True) // batch
            except RuntimeError:  # e.g. an in-place write into a leaf the split hands out: count it alone
                self.alone += 1
        return self._step(distiller, x, y, shared=False) // batch

    def _step(self, distiller, x: torch.Tensor, y: torch.Tensor, shared: bool) -> int:
        counter = _Counter()
        step = _Step(self, counter)
        try:
            with counter, (step.sharing(self._models) if shared else _nothing()):
                out = distiller(x, y)
                sum(v for k, v in out.items() if k.startswith("loss_")).backward()
                step.backward_shared()
            return int(counter.get_total_flops()) + step.repeated
        finally:
            for p in distiller.parameters():
                p.grad = None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class _Step:
    """One method's step: the shared passes it took (their leaves) and the FLOPs of its repeated passes."""

    def __init__(self, pair: PairSteps, counter: FlopCounterMode) -> None:
        self.pair, self.counter = pair, counter
        self.repeated = 0  # FLOPs of passes counted before, not run again
        self.taken: list[tuple[tuple, list]] = []  # (forward key, [(output index, leaf)])

    @contextmanager
    def sharing(self, models: list) -> Iterator[None]:
        """Each model's forward goes through `forward` below while the step runs."""
        for model in models:
            model.forward = self._shared_forward(model, model.forward)
        try:
            yield
        finally:
            for model in models:
                del model.forward  # the instance attribute: the class's forward again

    def _total(self) -> int:
        return int(self.counter.get_total_flops())

    def _shared_forward(self, model, real):
        def forward(x, *args, **kwargs):
            if args or kwargs or not isinstance(x, torch.Tensor) or x.requires_grad:
                return real(x, *args, **kwargs)  # not a self-contained pass of the step's input
            key = (id(model), tuple(x.shape), x.dtype, x.device.type, torch.is_grad_enabled(), model.training)
            known = self.pair._forwards.get(key)
            if known is None:
                before = self._total()
                outputs = real(x)
                known = self.pair._forwards[key] = (outputs, self._total() - before)
            else:
                self.repeated += known[1]
            return self._leaves(key, known[0])
        return forward

    def _leaves(self, key: tuple, outputs):
        """`outputs` with each tensor that has a graph replaced by a new leaf (the method's backward stops there)."""
        flat, rebuild = _flatten(outputs)
        leaves = []
        for i, t in enumerate(flat):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                flat[i] = t.detach().requires_grad_()
                leaves.append((i, flat[i]))
        if leaves:
            self.taken.append((key, leaves))
        return rebuild(flat)

    def backward_shared(self) -> None:
        """The backward of each shared pass from the gradients the method's backward left on its leaves."""
        for key, leaves in self.taken:
            reached = [(i, leaf.grad) for i, leaf in leaves if leaf.grad is not None]
            if not reached:
                continue
            flat, _ = _flatten(self.pair._forwards[key][0])
            roots = [flat[i] for i, _ in reached]
            runs = _backward_run(roots)
            known = self.pair._backwards.get(runs)
            if known is not None:
                self.repeated += known
                continue
            before = self._total()
            torch.autograd.backward(roots, [grad for _, grad in reached], retain_graph=True)
            self.pair._backwards[runs] = self._total() - before


def _backward_run(roots: list) -> tuple[frozenset, frozenset]:
    """What a backward from `roots` runs: the autograd nodes it reaches and the (node, output) slots that
    receive a gradient. Two sets of roots with the same run execute the same node formulas on the same
    shapes, so the same FLOPs: a student's stage outputs all feed its logits, so a method that also sends
    gradients to them (FitNet, OFA, TAS) runs the student's backward that scratch runs. The sets hold the
    nodes' Python objects, which keeps them (and so their identity) alive while the pair is counted."""
    nodes: set = set()
    slots: set = set()
    todo = []
    for root in roots:
        if root.grad_fn is not None:
            slots.add((root.grad_fn, root.output_nr))
            todo.append(root.grad_fn)
    while todo:
        node = todo.pop()
        if node in nodes:
            continue
        nodes.add(node)
        for successor, output in node.next_functions:
            if successor is not None:
                slots.add((successor, output))
                todo.append(successor)
    return frozenset(nodes), frozenset(slots)


def _flatten(outputs) -> tuple[list, Any]:
    """A model's outputs as a flat list and the function that builds the same structure from such a list."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    flat, spec = tree_flatten(outputs)
    return list(flat), lambda values: tree_unflatten(values, spec)
