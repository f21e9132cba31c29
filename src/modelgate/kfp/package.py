"""Compiled pipeline packages: reading them, their root parameters, checking run arguments.

Nothing here talks to Kubeflow Pipelines. :func:`check_arguments` finds the mistakes the API
server's ``validatePipelineJobInputs`` would answer 400 for (a missing required parameter, an
unknown one, a value of the wrong JSON type) before anything is uploaded;
:func:`describe_arguments` shows the arguments as KFP will receive them, each with its type;
:func:`default_version_name` names an uploaded version by time and content.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelgate.errors import ConfigError

#: File name endings of a compiled pipeline.
PACKAGE_SUFFIXES = (".yaml", ".yml", ".json")
#: libyaml's loader when present: a compiled pipeline parses ~10x faster.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: parameterType -> (what it takes, in words; whether a JSON value is of that type).
_PARAMETER_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "STRING": ("a string", lambda v: isinstance(v, str)),
    "NUMBER_INTEGER": (
        "a whole number",
        lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
    ),
    "NUMBER_DOUBLE": (
        "a number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    ),
    "BOOLEAN": ("true or false", lambda v: isinstance(v, bool)),
    "LIST": ("a list", lambda v: isinstance(v, list | tuple)),
    "STRUCT": ("a mapping", lambda v: isinstance(v, dict)),
}


def read_package(package_path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read a compiled pipeline package.

    Args:
        package_path: The compiled pipeline (YAML or JSON), e.g. ``pipelines/release.yaml``.

    Returns:
        The package's bytes and its pipeline spec document (the one with ``root``).

    Raises:
        ConfigError: The file is missing, not YAML/JSON, or holds no pipeline spec.
    """
    path = Path(package_path)
    if path.suffix not in PACKAGE_SUFFIXES:
        raise ConfigError(
            f"pipeline package {path} must be a compiled pipeline "
            f"({', '.join(PACKAGE_SUFFIXES)}); compile it with `modelgate compile`"
        )
    if not path.is_file():
        raise ConfigError(
            f"pipeline package {path} does not exist; compile it with `modelgate compile`"
        )
    data = path.read_bytes()
    try:
        docs = [d for d in yaml.load_all(data, Loader=_YAML_LOADER) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"pipeline package {path} is not valid YAML/JSON: {e}") from e
    spec = next((d for d in docs if isinstance(d, dict) and "root" in d), None)
    if spec is None:
        raise ConfigError(
            f"pipeline package {path} holds no pipeline spec (no 'root'); "
            "compile it with `modelgate compile`"
        )
    return data, spec


def root_parameters(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's input parameters.

    Args:
        spec: A pipeline spec, as :func:`read_package` returns it.

    Returns:
        ``root.inputDefinitions.parameters``: name to definition (``parameterType``,
        ``defaultValue``, ``isOptional``), in the spec's order; empty when it has none.
    """
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def check_arguments(package_path: Path, arguments: Mapping[str, Any]) -> None:
    """Check run arguments against the package's pipeline parameters, as KFP's server would.

    The API server rejects a run whose ``runtime_config.parameters`` miss a required parameter,
    name one the pipeline does not have, or give a value of the wrong JSON type (a STRING
    parameter needs a JSON string, LIST a list, STRUCT an object). This finds the same
    mistakes before anything is uploaded.

    Args:
        package_path: The compiled pipeline (YAML or JSON).
        arguments: Parameter name to value, with the JSON types the pipeline declares.

    Raises:
        ConfigError: The package cannot be read, or an argument is unknown, missing or of the
            wrong type; the message names it and the fix.
    """
    _, spec = read_package(package_path)
    _check(root_parameters(spec), arguments)


def _check(declared: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """:func:`check_arguments` on the package's declared root parameters."""
    problems: list[str] = []
    for name, value in arguments.items():
        definition = declared.get(name)
        if definition is None:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name!r} is not a parameter of the pipeline{hint}")
            continue
        kind = definition.get("parameterType", "")
        expected = _PARAMETER_TYPES.get(kind)
        if expected is None:
            problems.append(f"{name!r} has parameter type {kind!r}, which a run cannot set")
        elif not expected[1](value):
            fix = f"; pass {json.dumps(str(value))}" if kind == "STRING" else ""
            problems.append(
                f"{name!r} is a {kind} parameter and takes {expected[0]}, "
                f"got {type(value).__name__} {value!r}{fix}"
            )
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                problems.append(f"{name!r} is not JSON-serialisable: {e}")
    for name, definition in declared.items():
        if name not in arguments and not definition.get("isOptional"):
            if "defaultValue" not in definition:
                problems.append(f"{name!r} is required and has no default; give it a value")
    if problems:
        raise ConfigError("invalid run arguments: " + "; ".join(problems))


def describe_arguments(package_path: Path, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The run arguments as KFP will receive them, each with the type the package declares.

    Checked first with :func:`check_arguments`.

    Args:
        package_path: The compiled pipeline (YAML or JSON).
        arguments: Parameter name to value, with the JSON types the pipeline declares.

    Returns:
        ``{name: {"type": parameterType, "value": value}}`` in the package's order.

    Raises:
        ConfigError: As :func:`check_arguments`.
    """
    _, spec = read_package(package_path)
    declared = root_parameters(spec)
    _check(declared, arguments)
    return {
        name: {"type": declared[name].get("parameterType", ""), "value": arguments[name]}
        for name in declared
        if name in arguments
    }


def default_version_name(pipeline_name: str, package: bytes, *, now: datetime | None = None) -> str:
    """The name of a new pipeline version when none is given.

    Args:
        pipeline_name: The pipeline's display name.
        package: The package's bytes.
        now: The time to stamp; default the current time.

    Returns:
        ``<pipeline>-<UTC yyyymmdd-hhmmss-mmm>-<8 hex of the package's sha256>``.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    digest = hashlib.sha256(package).hexdigest()[:8]
    return f"{pipeline_name}-{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}-{digest}"
