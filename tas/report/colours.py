"""The report's colours: one fixed palette, a method's colour set by its place in the study's method order.

Every plot of a study asks `method_colours(spec.methods)`, so a method has the same colour in the curves of
every pair, in the gain bars and in the ablation bars, also where some methods have no data (a colour
taken from matplotlib's cycle would shift to the next method whenever one is missing). Pure: no matplotlib.
"""

from __future__ import annotations

from typing import Iterable

# matplotlib's tab10 without its grey (greys are the non-method roles below), then four darks of tab20b:
# 13 colours, enough for the largest study in params.yaml (10 methods). A study with more methods reuses
# them in order; the legends still name every method.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#843c39", "#7b4173")

# Bars that are not methods (teacher / assistant / student top-1): greys, so no bar reads as a method.
ROLE_COLOURS = {"teacher": "#404040", "assistant": "#8c8c8c", "student": "#c8c8c8"}


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """method id -> colour, by position in the study's method order (duplicates keep their first place)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(dict.fromkeys(methods))}


__all__ = ["PALETTE", "ROLE_COLOURS", "method_colours"]
