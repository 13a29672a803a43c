"""Policy files: YAML that bot designers edit, read into strict pydantic models whose
errors name the file and the key."""
from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Mapping, Sequence, Set, Type, TypeVar

import yaml

from common.paths import REPO_ROOT
from common.pydantic_v1 import BaseModel, Extra, ValidationError

DEFAULT_POLICY_DIR = REPO_ROOT / "policy"


class PolicyError(ValueError):
    """The policy files are invalid; the message says which file and key."""


class StrictModel(BaseModel):
    """A policy file's section: unknown keys are errors, values are read-only."""

    class Config:
        extra = Extra.forbid
        allow_mutation = False


def check_text(text: str, allowed: Sequence[str], required: Sequence[str] = ()) -> str:
    """A customer-facing text with `{placeholders}`: only known ones, no format specs,
    the required ones present, and braces that `str.format` understands."""
    if not text.strip():
        raise ValueError("must not be empty")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:
        raise ValueError(f"is not a valid text ({error}); write a literal brace as {{{{ "
                         "or }}") from None
    named: Set[str] = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}}; known: "
                             + ", ".join(f"{{{p}}}" for p in allowed))
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format or conversion")
        named.add(name)
    missing = [p for p in required if p not in named]
    if missing:
        raise ValueError(f"must name {{{missing[0]}}}")
    return text


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError as error:
        raise PolicyError(f"{path}: file not found") from error
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from error


Model = TypeVar("Model", bound=BaseModel)


def _location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"] if part != "__root__") or "top level"


def parse_yaml_model(model: Type[Model], path: Path) -> Model:
    """Read a YAML file into a pydantic model; errors name the file and the key."""
    try:
        return model.parse_obj(read_yaml(path) or {})
    except ValidationError as error:
        problems = "; ".join(f"{_location(e)}: {e['msg']}" for e in error.errors())
        raise PolicyError(f"{path}: {problems}") from error


def policy_dir() -> Path:
    return Path(os.environ.get("POLICY_DIR", DEFAULT_POLICY_DIR))
