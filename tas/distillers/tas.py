"""TAS (METHOD.md s.4): the student learns jointly with a hybrid assistant.

For each ordered pair (source -> target) in {t->s, t->a, a->s}:

    L_pair = w_nce * info_nce(g_src(f_src.detach()), g_tgt(f_tgt), scale)
           + w_logit * ofa(z_tgt, z_src.detach(), y, eps, T)

Total: CE(z_s, y) + CE(z_a, y) + sum of L_pair. The source model's feature and logits are detached so
that no pair pulls its source towards its target; the projection heads g_m are trained on both sides
(so g_t learns, the teacher does not). `scale` is CLIP's learnable log-parametrised temperature.
Every term and ablation of the paper is an option (params.yaml `methods.tas_*`).

The `mse` ablation (features compared as un-pooled stage-4 maps) is FitNet-style: a per-pair 1x1
regressor maps the target's map into the source's channels, compared with the source's raw, detached
map. No trainable module touches the source side, so the heads alone cannot shrink both sides towards
zero: the loss stays above what the best linear regression of the target's map can reach.
L2G starts from the run's own seed (`initialise`), so seeds differ in the assistant's start too.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn as nn

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.errors import TasError
from tas.models.assistant import HybridAssistant

PAIRS = ("ts", "ta", "as")


@register("tas")
class TAS(Distiller):
    defaults = {
        "fusion": "full",            # full | A (no L2G, no stage 4) | B (no stage 4)
        "l2g_mlp_ratio": None,       # MLP width of L2G's Swin block; null = part B's own (not in the paper)
        "b_readout": "token",        # a ViT part B's feature: token (its class token, as its head) | mean (of
                                     # patch tokens)
        "pairs": ["ts", "ta", "as"],  # which of t->s, t->a, a->s are trained
        "feature_loss": "info_nce",  # info_nce | mse (un-pooled maps) | none
        "logit_loss": "ofa",         # ofa | kd | none
        "w_nce": 1.0,
        "w_logit": 1.0,
        "eps": 1.0,
        "T": 1.0,
        "kd_T": 4.0,
        "proj_dim": 256,
        "scale_init": 1 / 0.07,
        "scale_max": 100.0,
        "assistant_ce": True,
        "ce_weight": 1.0,
    }
    rules = {
        "fusion": {"enum": ["full", "A", "B"]},
        "l2g_mlp_ratio": {"oneOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}]},
        "b_readout": {"enum": ["token", "mean"]},  # tas.models.assistant.B_READOUTS (a literal: read unimported)
        "pairs": {"type": "array", "items": {"enum": ["ts", "ta", "as"]}, "uniqueItems": True},
        "feature_loss": {"enum": ["info_nce", "mse", "none"]},
        "logit_loss": {"enum": ["ofa", "kd", "none"]},
        "w_nce": {"type": "number", "minimum": 0}, "w_logit": {"type": "number", "minimum": 0},
        "eps": {"type": "number", "exclusiveMinimum": 0}, "T": {"type": "number", "exclusiveMinimum": 0},
        "kd_T": {"type": "number", "exclusiveMinimum": 0}, "proj_dim": {"type": "integer", "minimum": 1},
        "scale_init": {"type": "number", "exclusiveMinimum": 0}, "scale_max": {"type": "number", "exclusiveMinimum": 0},
        "assistant_ce": {"type": "boolean"}, "ce_weight": {"type": "number", "minimum": 0},
    }

    built_first = "assistant"
    auxiliaries = ("assistant",)

    @classmethod
    def build_first(cls, student, teacher, options, num_classes, image_size) -> dict:
        """The pair's assistant with this method's options (fusion, L2G, read-out): its shapes checked by
        building it, its cost, and its shape plan, which each run of the method checks itself against."""
        assistant = _assistant(teacher, student, num_classes, {**cls.defaults, **dict(options)}).eval()
        cost = assistant.cost(image_size)
        roles = assistant.roles
        return {
            "part_a_source": f"{roles.part_a}: stem + stages 1-3",
            "part_b_source": f"{roles.part_b}: stage 4 + norm + pool + head" if assistant.fusion == "full" else None,
            "shared_parameters": cost["shared_parameters"],
            "new_parameters": assistant.new_parameters(),
            "flops_total": cost["flops_total"],
            "flops_added_per_step": cost["flops_added_per_step"],
            "shape_plan": _plan(assistant),
        }

    def check_built_first(self, record) -> None:
        if record.get("shape_plan") != _plan(self.assistant):
            raise TasError("this run's assistant differs from the one prepare-run built for it "
                           f"({record.get('shape_plan')} vs {_plan(self.assistant)}): "
                           "rerun prepare-run for this pair and method first")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        o = self.options
        self.pairs = tuple(o["pairs"])
        self.assistant = _assistant(self.teacher, self.student, self.num_classes, o)
        dims = {"t": self.teacher.feature_dim, "s": self.student.feature_dim, "a": self.assistant.feature_dim}
        used = sorted({m for pair in self.pairs for m in pair})
        if o["feature_loss"] == "info_nce":
            self.proj = nn.ModuleDict({m: nn.Linear(dims[m], o["proj_dim"]) for m in used})
            self.logit_scale = nn.Parameter(torch.tensor(math.log(o["scale_init"])))
        elif o["feature_loss"] == "mse":
            widths = {"t": self.teacher.layouts[3].channels, "s": self.student.layouts[3].channels}
            if "a" in used:
                widths["a"] = self._assistant_map_width()
            # pair -> regressor of the target's map into the source's channels (FitNet's bias-free 1x1)
            self.regressors = nn.ModuleDict({p: nn.Conv2d(widths[p[1]], widths[p[0]], 1, bias=False)
                                             for p in self.pairs})

    def _assistant_map_width(self) -> int:
        a = self.assistant
        if a.fusion == "A":
            return a.source_layout.channels
        if a.fusion == "B":
            return a.target_layout.channels
        return a.part_b.layouts[3].channels

    def _scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.options["scale_max"])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        kt = self.teacher_knowledge(x)
        ks = self.student(x)
        stage3_a = (ks if self.assistant.roles.part_a == "student" else kt).stages[2]
        a_map, f_a, z_a = self.assistant(stage3_a)
        feature = {"t": kt.feature, "s": ks.feature, "a": f_a}
        logits = {"t": kt.logits, "s": ks.logits, "a": z_a}
        if o["feature_loss"] == "mse":  # only the map ablation needs un-pooled stage-4 maps
            maps = {"t": self.teacher.to_map(kt.stages[3], 3), "s": self.student.to_map(ks.stages[3], 3), "a": a_map}

        out = {"logits": ks.logits, "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y)}
        if o["assistant_ce"]:
            out["loss_ce_assistant"] = self.criterion(z_a, y)
        for pair in self.pairs:
            src, tgt = pair[0], pair[1]
            if o["feature_loss"] == "info_nce":
                e_src = self.proj[src](feature[src].detach())
                out[f"loss_nce_{pair}"] = o["w_nce"] * losses.info_nce(e_src, self.proj[tgt](feature[tgt]),
                                                                       self._scale())
            elif o["feature_loss"] == "mse":
                hint = self.regressors[pair](maps[tgt])
                out[f"loss_mse_{pair}"] = o["w_nce"] * losses.fitnet_hint(hint, maps[src].detach())
            if o["logit_loss"] == "ofa":
                out[f"loss_ofa_{pair}"] = o["w_logit"] * losses.ofa(logits[tgt], logits[src].detach(), y,
                                                                    o["eps"], o["T"])
            elif o["logit_loss"] == "kd":
                out[f"loss_kd_{pair}"] = o["w_logit"] * losses.kd(logits[tgt], logits[src].detach(), o["kd_T"])
        return out

    def initialise(self, seed: int) -> str:
        """L2G (and an ablation's head) start from the run's seed, not from one L2G shared by all seeds."""
        self.assistant.reinitialise(seed)
        return f"seed {seed}"

    def assistant_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.assistant.roles.part_a == "student":
            stage3 = self.student.forward_until(x, 2)
        else:
            stage3 = self.teacher_knowledge(x).stages[2]
        return self.assistant(stage3)[2]

    def auxiliary_classifiers(self):
        return {"assistant": self.assistant_logits}


def _assistant(teacher, student, num_classes: int, options) -> HybridAssistant:
    return HybridAssistant(teacher, student, num_classes, fusion=options["fusion"],
                           l2g_mlp_ratio=options["l2g_mlp_ratio"], b_readout=options["b_readout"])


def _plan(assistant: HybridAssistant) -> dict:
    """The assistant's shape plan as its JSON record holds it. Without its parameter count: a head built
    before an image folder's classes are counted (tas.jobs.common.UNCOUNTED_CLASSES) differs only there."""
    plan = json.loads(json.dumps(assistant.spec()))
    plan.pop("new_parameters")
    return plan
