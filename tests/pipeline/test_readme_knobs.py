"""The README's knob table is checked against the one definition, pipeline/configs.py.

Every PipelineConfig field is documented under its environment-variable name with its real
default, and the table documents no knob that the code does not read.
"""

from __future__ import annotations

import dataclasses
import os
import re

from pipeline.configs import REPO_ROOT, PipelineConfig

# Read from the environment by the runner itself, not a pipeline knob.
RUNNER_ONLY_KNOBS = {"VERBOSE"}


def _knob_table() -> dict[str, str]:
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## Knobs", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    assert rows, "no knob table under '## Knobs' in README.md"
    return {name: default.strip() for name, default in rows}


def _documents(cell: str, default) -> bool:
    """Whether the README's default cell states the field's default."""
    cell = cell.strip("`")
    if default in ("", None) or isinstance(default, str) and os.path.isabs(default):
        # Empty defaults are explained in words, e.g. "(empty: demo)"; absolute paths are
        # shown relative to the checkout.
        return cell.startswith("(") or (bool(default) and default.endswith(cell))
    if isinstance(default, bool):
        return cell.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(cell) == float(default)
        except ValueError:
            return False
    return cell == str(default)


def test_every_knob_is_documented_with_its_default():
    table = _knob_table()
    for field in dataclasses.fields(PipelineConfig):
        name = field.name.upper()
        assert name in table, f"{name} (pipeline/configs.py) is missing from README's knob table"
        assert _documents(table[name], field.default), (
            f"README says {name} defaults to {table[name]!r}; pipeline/configs.py says "
            f"{field.default!r}"
        )


def test_the_table_documents_only_real_knobs():
    fields = {field.name.upper() for field in dataclasses.fields(PipelineConfig)}
    unknown = set(_knob_table()) - fields - RUNNER_ONLY_KNOBS
    assert not unknown, f"README documents knobs pipeline/configs.py does not define: {unknown}"
