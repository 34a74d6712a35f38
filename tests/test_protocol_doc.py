"""docs/protocol.md's "Recipes of the paper studies" table is the recipes params.yaml runs: every field of
every paper study's student recipe has a row, and the row's `ours` value is the value in params.yaml."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from tas.config import RecipeSpec, load_config

ROOT = Path(__file__).resolve().parent.parent
CFG = load_config(ROOT / "params.yaml")
PAPER_STUDIES = ("cifar100", "cifar100_32", "ablation", "imagenet")
SECTION = "## Recipes of the paper studies"
# Not the paper's protocol: how many test images one forward holds changes no number.
NOT_PROTOCOL = {"id", "eval_batch_size"}


def _table() -> dict[tuple[str, str], str]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert SECTION in text, f"docs/protocol.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[0] in ("recipe", "") or set(cells[0]) <= set("-: "):
            continue
        recipe, field, ours = (re.sub(r"^`|`$", "", c) for c in cells[:3])
        assert (recipe, field) not in rows, f"two rows for {recipe}.{field}"
        rows[(recipe, field)] = ours
    return rows


def _relevant(recipe: RecipeSpec, field: str) -> bool:
    """Fields that shape a run of this recipe (a step schedule's settings do not shape a cosine one)."""
    if field in ("step_epochs", "step_gamma"):
        return recipe.scheduler == "step"
    if field == "momentum":
        return recipe.optimizer == "sgd"
    return field not in NOT_PROTOCOL


def paper_student_recipes() -> list[str]:
    ids = {CFG.student_recipe(exp, student).id for exp in map(CFG.experiment, PAPER_STUDIES)
           for student in exp.students}
    return sorted(ids)


def test_every_field_of_every_paper_recipe_is_in_the_table_with_our_value():
    rows = _table()
    fields = [f.name for f in dataclasses.fields(RecipeSpec)]
    for recipe_id in paper_student_recipes():
        recipe = CFG.recipes[recipe_id]
        for field in fields:
            if not _relevant(recipe, field):
                continue
            assert (recipe_id, field) in rows, f"docs/protocol.md: no row for recipe {recipe_id} field {field}"
            documented = yaml.safe_load(rows[(recipe_id, field)])
            assert documented == getattr(recipe, field), (
                f"docs/protocol.md says recipes.{recipe_id}.{field} is {documented!r}; "
                f"params.yaml has {getattr(recipe, field)!r}")


def test_every_row_names_a_recipe_params_yaml_has():
    for recipe_id, _ in _table():
        assert recipe_id in CFG.recipes, f"docs/protocol.md documents recipe {recipe_id!r}, which params.yaml lacks"


def test_the_paper_studies_use_the_recipes_the_issue_names():
    # Table 1 as OFA ran it: a global batch of 1024 (48 steps per CIFAR-100 epoch), no EMA, no drop-path.
    for recipe_id in ("cnn", "cnn_r18", "transformer"):
        recipe = CFG.recipes[recipe_id]
        assert (recipe.global_batch, recipe.micro_batch, recipe.ema_decay, recipe.drop_path) == (1024, 128, None, 0.0)
    assert CFG.student_recipe(CFG.experiment("cifar100"), "r18").lr == 0.1
