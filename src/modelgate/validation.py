"""One place where pydantic's validation errors become a :class:`~modelgate.errors.ConfigError`,
and where config text (inline JSON/YAML or a file naming it) is read.

Every config modelgate reads (run parameters, params files, gate configs, placement, deploy
specs) is a pydantic model; :func:`validated` turns its errors into one line per problem that
names the field, and an unknown key gets the closest known name ("did you mean …?").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from modelgate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: Suffixes that make a short one-line config argument a file to read instead of inline text.
CONFIG_SUFFIXES = frozenset({".json", ".yaml", ".yml"})


def parse_config_text(source: str, *, what: str) -> Any:
    """The data in ``source``: JSON/YAML text, or the file it names (a one-line string ending in
    ``.json``/``.yaml``/``.yml``).

    Raises:
        ConfigError: The named file does not exist, or the text is neither JSON nor YAML.
    """
    candidate = Path(source) if len(source) < 4096 and "\n" not in source else None
    text = source
    if candidate is not None and candidate.suffix in CONFIG_SUFFIXES:
        if not candidate.is_file():
            raise ConfigError(f"{what} file {source!r} does not exist")
        text = candidate.read_text()
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is neither JSON nor YAML: {e}") from e


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def known_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """Every field name of ``model`` and of the models nested in it (for did-you-mean)."""
    seen: dict[str, None] = {}
    todo, done = [model], set()
    while todo:
        current = todo.pop()
        if current in done:
            continue
        done.add(current)
        for name, field in current.model_fields.items():
            seen[name] = None
            todo.extend(_models_in(field.annotation))
    return tuple(seen)


def problems(
    error: ValidationError,
    *,
    names: tuple[str, ...],
    elsewhere: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem in ``error``.

    Args:
        error: What pydantic raised.
        names: The keys the model knows (suggested for an unknown key).
        elsewhere: Keys that belong to something else, with what to say instead of "unknown"
            (e.g. ``{"model_store": "is a parameter of the release pipeline, not of redeploy"}``).
    """
    out = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            last = str(err["loc"][-1])
            if elsewhere and last in elsewhere:
                out.append(f"{last!r} {elsewhere[last]}")
                continue
            close = difflib.get_close_matches(last, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"unknown key {key!r}{hint}")
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            out.append(f"{key}: {message}")
    return out


def validated(
    model: type[M],
    data: Any,
    *,
    what: str,
    source: str | None = None,
    elsewhere: Mapping[str, str] | None = None,
) -> M:
    """``model.model_validate(data)`` with pydantic's errors turned into one :class:`ConfigError`.

    Args:
        model: The pydantic model.
        data: What to validate.
        what: What it is, for the message ("gate config", "placement").
        source: Where it came from, when that says more than ``what`` (a file name).
        elsewhere: See :func:`problems`.

    Raises:
        ConfigError: Each invalid field as ``path: message``; unknown keys with the closest name.
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = problems(e, names=known_keys(model), elsewhere=elsewhere)
        prefix = f"{source}: " if source else f"invalid {what}: "
        raise ConfigError(prefix + "; ".join(lines)) from e
