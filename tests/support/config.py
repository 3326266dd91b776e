"""Configuration files for the tests: ``toml_value`` (a tiny TOML writer) and ``render_config``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path


def toml_value(value: object) -> str:
    """``value`` written as TOML; a path is written as its string."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(value, ensure_ascii=False)


def render_config(
    sections: Mapping[str, Mapping[str, object]], keysets: list[dict[str, object]]
) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    for keyset in keysets:
        lines.append("[[keysets]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keyset.items()]
    return "\n".join(lines) + "\n"
