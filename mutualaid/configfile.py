"""Load YAML configuration into pydantic models, with errors a person can act on.

Every problem names the file, the line, the field and a fix, e.g.

    deploy/agencies.yaml:12: agencies[3].type: 'city' is not allowed.
      Fix: use one of local, county, state, federal.

and all problems in a file are reported at once, so a supervisor fixing an agreement does not
have to run the check once per mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mutualaid.errors import UsageError

M = TypeVar("M", bound=BaseModel)

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}\n  Fix: {self.fix}"


class ConfigError(UsageError):
    """A configuration or agreement file that must be fixed before anything starts."""

    prefix = "cannot start, fix the configuration first:\n"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def field_path(loc: Loc) -> str:
    """('agencies', 3, 'type') -> 'agencies[3].type'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_index(node: yaml.Node, loc: Loc, index: dict[Loc, int]) -> None:
    """Record the 1-based line of every key and item, so errors can point at it."""
    index[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, key.value)
            _line_index(value, child, index)
            index[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*loc, i), index)


def _line_for(index: dict[Loc, int], loc: Loc) -> int | None:
    # A missing field has no line of its own: point at the nearest enclosing item.
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in index:
            return index[loc[:cut]]
    return None


def _fix_for(error: Mapping[str, Any], model: type[BaseModel], loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    name = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"add `{name}:`" + _described(model, loc)
    if kind == "extra_forbidden":
        return f"remove `{name}` or correct its spelling" + _allowed(model, loc[:-1])
    if kind in ("literal_error", "enum"):
        return f"use one of {ctx.get('expected', 'the allowed values')}"
    return "correct the value" + _described(model, loc)


def _field_info(model: type[BaseModel], loc: Loc) -> Any:
    """Walk nested models along loc to the FieldInfo it names, skipping list indexes."""
    current: Any = model
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        current = _inner_model(info.annotation)
    return info


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as ``list[Agency]`` or ``Agency | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def _described(model: type[BaseModel], loc: Loc) -> str:
    info = _field_info(model, loc)
    return f" ({info.description})" if info is not None and info.description else ""


def _allowed(model: type[BaseModel], parent: Loc) -> str:
    target = _inner_model(_field_info(model, parent).annotation) if parent else model
    if target is None:
        return ""
    return f"; allowed keys here: {', '.join(target.model_fields)}"


def problems_from(
    error: ValidationError,
    model: type[BaseModel],
    file: Path,
    lines: dict[Loc, int],
    base: Loc = (),
) -> list[Problem]:
    """Translate pydantic's errors into Problems located in the YAML file."""
    problems = []
    for err in error.errors():
        loc = (*base, *err["loc"])
        problems.append(
            Problem(
                file=file,
                line=_line_for(lines, loc),
                field=field_path(loc),
                message=_message(err),
                fix=_fix_for(err, model, tuple(err["loc"])),
            )
        )
    return problems


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "missing":
        return "is required but missing"
    if err["type"] == "extra_forbidden":
        return "is not a known setting"
    return f"{err['input']!r} is not allowed: {err['msg'].removeprefix('Value error, ')}"


def read_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file, returning its data and a (field path -> line) index."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # Also a dangling symbolic link, or a file deleted between listing and reading.
        raise ConfigError(
            [
                Problem(
                    path,
                    None,
                    "",
                    "file not found (or a link to a file that is not there)",
                    "create it, remove the link, or point the setting at the right path",
                )
            ]
        ) from None
    except PermissionError:
        raise ConfigError(
            [
                Problem(
                    path,
                    None,
                    "",
                    "cannot be read: permission denied",
                    "let the user the stage runs as read it (chmod o+r, or chgrp)",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [Problem(path, None, "", f"cannot be read: {exc.strerror or exc}", "make it a file")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(path, None, "", f"not UTF-8 text ({exc.reason})", "save the file as UTF-8")]
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError(
            [
                Problem(
                    path,
                    line,
                    "",
                    f"not valid YAML: {getattr(exc, 'problem', exc)}",
                    "check indentation and quoting on that line",
                )
            ]
        ) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return data, lines


def is_editor_file(name: str) -> bool:
    """Hidden files and what editors leave beside the file being edited: Emacs locks and
    autosaves (``.#a.yaml``, ``#a.yaml#``), backups (``a.yaml~``), vim swaps (``.a.yaml.swp``)."""
    return name.startswith((".", "#")) or name.endswith(("~", "#", ".swp", ".swx", ".tmp"))


def yaml_files(directory: Path) -> list[Path]:
    """The ``*.yaml`` files of a configuration folder, sorted, without editor files. An
    unreadable folder lists nothing; the caller reports that it found no files."""
    try:
        return sorted(p for p in directory.glob("*.yaml") if not is_editor_file(p.name))
    except OSError:
        return []


def load_model(path: Path, model: type[M], context: dict[str, Any] | None = None) -> M:
    """Read a YAML file into a model, or raise ConfigError listing every problem in it.

    ``context`` reaches the model's validators, for checks against other files (an agreement
    naming an agency that the registry does not have).
    """
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    path,
                    1,
                    "",
                    "expected a mapping of settings at the top level",
                    f"start the file with the keys of {model.__name__}",
                )
            ]
        )
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, model, path, lines)) from None
