"""Recipes: named config files shipped in `ffstream/config/recipes/NAME.json`, one per measured result or use.

A recipe is a JSON object of config sections (`stream`, `model`, `sleep`, top-level keys such as `device`) plus
two notes for people, which the loader skips: `description` (one line: what it is for) and `measured` (the
figure, the command that reproduces it, and the command BENCHMARKS.md measured it with). `--recipe` also takes
a path: any such file, or a checkpoint directory, whose `run.json` records the run that made it.

    >>> sorted(shipped())[:2]
    ['images-conv-supervised', 'images-conv-unsupervised']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffstream.config.rules import ConfigError

RECIPE_DIR = Path(__file__).with_name("recipes")
RUN_JSON = "run.json"  # the effective config, written beside a run's checkpoints
NOTES = ("description", "measured")  # a recipe's words for people; not config keys


@dataclass(frozen=True)
class Recipe:
    name: str  # the shipped name, or the path it was read from
    path: Path  # the JSON file
    data: dict[str, Any]  # the config sections and top-level keys, without the notes
    description: str  # one line: what the recipe is for
    measured: dict[str, Any]  # {"figure": ..., "command": ..., "as_measured": ...}; empty for a recorded run


def shipped() -> dict[str, Path]:
    """name -> file of every recipe in the package."""
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.json"))}


def find(name_or_path: str) -> Path:
    """A shipped name, a JSON file, or a checkpoint directory with a run.json; else one line that lists the names."""
    known = shipped()
    if name_or_path in known:
        return known[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        if (path / RUN_JSON).is_file():
            return path / RUN_JSON
        raise ConfigError(f"recipe {name_or_path!r}: a directory, but with no {RUN_JSON} (a checkpoint directory of ffstream run has one)")
    if path.is_file():
        return path
    raise ConfigError(f"unknown recipe {name_or_path!r}: not a file, and the shipped ones are {', '.join(known)}")


def read(name_or_path: str) -> Recipe:
    path = find(name_or_path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"recipe {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a JSON object")
    measured = data.get("measured") or {}
    name = name_or_path if name_or_path in shipped() else str(path)
    return Recipe(name, path, {k: v for k, v in data.items() if k not in NOTES}, str(data.get("description", "")),
                  measured if isinstance(measured, dict) else {"figure": str(measured)})
