"""A RunConfig from its layers, in one place. Precedence, lowest first:

    dataclass defaults < base (a command's own starting point, e.g. the learning bench's) < recipe (`--recipe`)
    < JSON config file (`--config`) < `FFSTREAM_<SECTION>_<FIELD>` environment variables
    < `--set section.key=value` < the command's own flags

Every value from a file, the environment or `--set` is typed by its dataclass field; an unknown key or a bad
value is one ConfigError line that names it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ffstream.config import recipes
from ffstream.config.rules import ConfigError
from ffstream.config.sections import SECTIONS, RunConfig


def coerce(key: str, typ: Any, value: Any) -> Any:
    """A file, environment or --set value to the field's type (given as its annotation text), or a ConfigError naming the key."""
    text = str(typ)
    try:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if "None" in text:
                return None
            raise ValueError("may not be empty")
        if "tuple[int | str" in text:  # layer specs: "500,500" or "conv:32x3x3,dense:1000"; checked by parse_layers
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(p) if str(p).strip().isdigit() else str(p).strip() for p in parts)
        if "tuple[int, int]" in text:
            parts = value if isinstance(value, (list, tuple)) else str(value).lower().replace("x", ",").split(",")
            return tuple(int(p) for p in parts)
        if "tuple[int" in text:
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(p) for p in parts)
        if "tuple[str" in text:
            return tuple(value if isinstance(value, (list, tuple)) else str(value).split(","))
        if text.startswith("bool") or text == "<class 'bool'>":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if "float" in text:
            return float(value)
        if "int" in text:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: bad value {value!r} ({exc})") from None


class _Builder:
    """Applies the layers to one RunConfig, remembering which keys any layer set (see `finish`)."""

    def __init__(self) -> None:
        self.cfg = RunConfig()
        self.touched: set[str] = set()  # "section.field" (or "field") set by some layer

    def apply(self, target: Any, prefix: str, values: dict[str, Any], origin: str = "") -> None:
        fields = {f.name: f for f in dataclasses.fields(target)}
        for name, value in values.items():
            if name not in fields:
                where = f" (in {origin})" if origin else ""
                raise ConfigError(f"unknown config key {prefix}{name}; known: {', '.join(sorted(fields))}{where}")
            setattr(target, name, coerce(prefix + name, fields[name].type, value))
            self.touched.add(f"{prefix.split(' -> ')[-1]}{name}")

    def apply_sections(self, data: dict[str, Any], origin: str) -> None:
        """A JSON object of sections and top-level keys (a recipe, a config file, a recorded run.json)."""
        for key, value in data.items():
            if key in recipes.NOTES:
                continue
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config key {key!r} must be an object (in {origin})")
                self.apply(getattr(self.cfg, key), f"{key}.", value, origin)
            else:
                self.apply(self.cfg, "", {key: value}, origin)

    def finish(self) -> RunConfig:
        # A micro-batch of the source's batch size, as `--batch` set both: a layer merges queued messages up to
        # model.max_batch rows, so a stream of batch 1 (live video) would otherwise step on 64 merged rows.
        if "stream.batch" in self.touched and "model.max_batch" not in self.touched:
            self.cfg.model.max_batch = self.cfg.stream.batch
        if self.cfg.model.freeze:
            self.cfg.sleep.enabled = False  # a frozen stack learns nothing, so no negatives are made for it
        return self.cfg


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """`--set section.key=value` (or `key=value` for a top-level field such as threads) -> {section: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        section, dot, name = key.strip().rpartition(".")
        if not eq or not name:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set model.lr=0.01")
        if dot and section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; known: {', '.join(SECTIONS)}")
        out.setdefault(section, {})[name] = value
    return out


def read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def env_fields(environ: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """The FFSTREAM_<SECTION>_<FIELD> (or FFSTREAM_<TOP-LEVEL FIELD>) variables: (name, section or "", field, value)."""
    top_level = {f.name for f in dataclasses.fields(RunConfig)}
    out = []
    for name, value in environ.items():
        if not name.startswith("FFSTREAM_"):
            continue
        key = name[len("FFSTREAM_") :].lower()
        section, _, field_name = key.partition("_")
        if section in SECTIONS and field_name:
            out.append((name, section, field_name, value))
        elif key in top_level:
            out.append((name, "", key, value))
    return out


def chosen_fields(path: str | None = None, sets: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> set[str]:
    """The `section.key` fields that a --config file, FFSTREAM_* variables or --set choose (top-level fields: `key`)."""
    pairs = [(s, k) for s, values in parse_sets(sets).items() for k in values]
    pairs += [(s, k) for _, s, k, _ in env_fields(os.environ if environ is None else environ)]
    for key, value in (read_json(path) if path else {}).items():
        pairs += [(key, k) for k in value] if isinstance(value, dict) else [("", key)]  # a section, or a top-level field
    return {f"{s}.{k}" if s else k for s, k in pairs}


def load(path: str | None = None, environ: dict[str, str] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
         recipe: str | None = None, sets: Sequence[str] = (), base: dict[str, Any] | None = None, check: bool = True) -> RunConfig:
    """Defaults, base, the recipe, the JSON file, FFSTREAM_* variables, --set, then overrides (flags; None: not given)."""
    b = _Builder()
    if base:
        b.apply_sections(base, "the command's defaults")
    if recipe:
        found = recipes.read(recipe)
        b.apply_sections(found.data, f"recipe {found.name}")
    if path:
        b.apply_sections(read_json(path), path)
    for name, section, field_name, value in env_fields(os.environ if environ is None else environ):
        target = b.cfg if section == "" else getattr(b.cfg, section)
        b.apply(target, f"{name} -> {section}." if section else f"{name} -> ", {field_name: value})
    for section, values in parse_sets(sets).items():
        b.apply(b.cfg if section == "" else getattr(b.cfg, section), f"{section}." if section else "", values, "--set")
    cfg = b.finish()
    for section, values in (overrides or {}).items():
        target = cfg if section == "" else getattr(cfg, section)
        for name, value in values.items():
            if value is not None:
                setattr(target, name, value)
    if check:
        cfg.check()
    return cfg


def recorded(checkpoint_dir: str) -> RunConfig | None:
    """The config a checkpoint directory was made with (its run.json, written by `ffstream run`); None if it has none."""
    path = Path(checkpoint_dir) / recipes.RUN_JSON
    if not path.is_file():
        return None
    return load(str(path), environ={}, check=False)
