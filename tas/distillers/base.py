"""What every distiller shares: the student/teacher wiring and the contract the trainer relies on.

Contract: `forward(x, y) -> {"logits": student logits, "loss_ce": ..., "loss_<term>": ...}`; the
trainer sums every `loss_*` entry and logs each. The teacher is frozen and stays in eval mode
whatever `train()` is called with; only the student and the modules a method adds are trained.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Mapping

import torch
import torch.nn as nn

from tas.models.stages import Knowledge, StageView

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Distiller(nn.Module):
    method_type: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    # option -> JSON Schema (type, range, choices), declared once beside `defaults`; `check` and
    # build_distiller both apply it (tas.distillers.registry.MethodDeclaration.problem)
    rules: ClassVar[dict] = {}
    needs_teacher: ClassVar[bool] = True
    # What a method builds once per (pair, method) before any of its runs trains, by name (TAS: its hybrid
    # assistant), or None. The pipeline gives it a job of its own (prepare-run: `build_first` writes its
    # record, so a pair that cannot be built fails in seconds, not after the teacher's GPU hours), and every
    # run of the method depends on that record and checks itself against it (`check_built_first`).
    built_first: ClassVar[str | None] = None
    # The auxiliary classifiers whose top-1 the method reports beside the student's (the keys of
    # auxiliary_classifiers(); TAS: its assistant): the tables read them from here.
    auxiliaries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, student: StageView, teacher: StageView | None, options: Mapping, num_classes: int,
                 criterion: Criterion) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.options = {**self.defaults, **dict(options)}
        self.num_classes = num_classes
        self.criterion = criterion
        if teacher is not None:
            teacher.eval()
            for param in teacher.parameters():
                param.requires_grad_(False)

    @classmethod
    def build_first(cls, student: StageView, teacher: StageView, options: Mapping, num_classes: int,
                    image_size: int) -> dict:
        """Build and check what `built_first` names from freshly made models; its JSON record."""
        raise NotImplementedError(f"{cls.__name__} declares built_first = {cls.built_first!r} "
                                  "but defines no build_first()")

    def check_built_first(self, record: Mapping) -> None:
        """Raise TasError when this distiller is not what `build_first` recorded (a stale record)."""

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def teacher_knowledge(self, x: torch.Tensor) -> Knowledge:
        # no_grad, not inference_mode: some methods feed teacher activations into trainable modules.
        with torch.no_grad():
            return self.teacher(x)

    def _model_parameter_ids(self) -> set[int]:
        models = [self.student] if self.teacher is None else [self.student, self.teacher]
        return {id(p) for model in models for p in model.parameters()}

    def extra_parameters(self) -> int:
        """Trainable parameters the method adds on top of the student (the papers' 'extra params')."""
        owned = self._model_parameter_ids()
        # Module.parameters() already yields each shared parameter once.
        return sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in owned)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def auxiliary_classifiers(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Extra models whose accuracy evaluation reports (e.g. the TAS assistant): name -> x -> logits."""
        return {}

    def initialise(self, seed: int) -> str | None:
        """Re-draw, from the run's `seed` alone, the initial weights of added modules whose start should
        not depend on what was built before them (TAS's L2G); returns where they started from, for
        metrics.json, or None when the method has nothing to say (the default)."""
        return None

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """State of everything but the frozen teacher (what a resume checkpoint needs)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(dict(state), strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"resume state does not match the distiller: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
