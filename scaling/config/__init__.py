"""The study configuration: YAML (safe-loaded) into typed, validated dataclasses.

    schema.py   the config classes (every key with its type, range and default) and checking raw values
                against them (pydantic), failing with the key path, the bad value and what was expected
    checks.py   the checks that need several keys or a registry (datasets, ladders, published weights)

Here: loading a file, the command-line overrides `a.b.c=value` (applied to the raw mapping first, so they go
through the same checks), the --help listing of every key, and the mapping a study stamps and hashes.
Everything is checked before any data is touched or Ray is started.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from scaling.config.checks import validate
from scaling.config.schema import (BOTH, MEDICAL, NATURAL, SCRATCH, SOURCES, ConfigError, DataConfig, DatasetRef,
                                   FinetuneConfig, LeakageConfig, ModelsConfig, PublishedWeights, Recipe,
                                   ResourcesConfig, StudyConfig, SweepConfig, TrackingConfig, coerce, describe,
                                   has_own_data, parse_study)

__all__ = ["PROJECT_ROOT", "CONFIG_DIR", "DEFAULT_CONFIG", "SCRATCH", "NATURAL", "MEDICAL", "BOTH", "SOURCES",
           "ConfigError", "PublishedWeights", "DatasetRef", "LeakageConfig", "DataConfig", "ModelsConfig", "Recipe",
           "FinetuneConfig", "SweepConfig", "ResourcesConfig", "TrackingConfig", "StudyConfig", "load_config",
           "apply_override", "coerce", "validate", "has_own_data", "override_help", "to_dict"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "studies" / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> StudyConfig:
    """Read a YAML study config, apply `a.b.c=value` overrides, build and validate the typed config."""
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    cfg = parse_study(raw)
    validate(cfg)
    return cfg


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the raw mapping; the value is parsed as YAML (so `0.1`, `[1, 2]`, `true` work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None


def override_help(cls=StudyConfig, path: str = "") -> list[str]:
    """One line per settable key: `key.path  type  (default)`, for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += override_help(tp, key)
            continue
        if f.default is not dataclasses.MISSING:
            default = f" (default {f.default!r})"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" (default {f.default_factory()!r})"
        else:
            default = " (required)"
        note = f"; {f.metadata['help']}" if "help" in f.metadata else ""
        lines.append(f"  {key:<36} {describe(tp)}{default}{note}")
    return lines


def to_dict(cfg: StudyConfig) -> dict:
    """The config as plain data: what a study writes to config.yaml and hashes to recognise its directory."""
    return dataclasses.asdict(cfg)

