"""Strict validation of Kubernetes objects against KServe's CRD schemas.

:func:`validate_inference_service` checks an object against the InferenceService CRD's ``v1beta1``
``openAPIV3Schema`` made strict by :func:`strict_schema`. The API server silently prunes unknown
fields (``storageURI`` would just vanish), so strictness is what catches typos. CRDs are read from
``$MODELGATE_SCHEMAS_DIR`` or ``<repo>/../shared/schemas``.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from modelgate.errors import ConfigError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

SCHEMAS_DIR_ENV = "MODELGATE_SCHEMAS_DIR"
KSERVE_SCHEMAS = "kserve-v0.20.0"
ISVC_CRD_FILE = f"{KSERVE_SCHEMAS}/serving.kserve.io_inferenceservices.yaml"
SERVING_RUNTIME_CRD_FILE = f"{KSERVE_SCHEMAS}/serving.kserve.io_servingruntimes.yaml"
CLUSTER_STORAGE_CONTAINER_CRD_FILE = (
    f"{KSERVE_SCHEMAS}/serving.kserve.io_clusterstoragecontainers.yaml"
)


def schemas_dir() -> Path:
    """The shared schemas folder: ``$MODELGATE_SCHEMAS_DIR`` or ``<repo>/../shared/schemas``.

    Raises:
        ConfigError: The folder does not exist.
    """
    env = os.environ.get(SCHEMAS_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        source = f"${SCHEMAS_DIR_ENV}"
    else:
        path = Path(__file__).resolve().parents[3].parent / "shared" / "schemas"
        source = "the default <repo>/../shared/schemas"
    if not path.is_dir():
        raise ConfigError(
            f"CRD schemas folder {path} (from {source}) does not exist; set "
            f"{SCHEMAS_DIR_ENV} to the folder holding {ISVC_CRD_FILE}"
        )
    return path


def _resolve_crd_file(kind_file: str | os.PathLike[str]) -> Path:
    path = Path(kind_file)
    if path.is_absolute():
        candidates = [path]
    else:
        base = schemas_dir()
        candidates = [base / path, base / KSERVE_SCHEMAS / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"CRD file {kind_file} not found (looked at {', '.join(map(str, candidates))}); "
        f"set {SCHEMAS_DIR_ENV} to the shared schemas folder"
    )


try:
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


@functools.lru_cache(maxsize=16)
def _load_crd_schema_cached(path: str, version: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        crd = yaml.load(fh, Loader=_YamlLoader)  # noqa: S506 - safe loader (C or pure)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ConfigError(f"{path} is not a CustomResourceDefinition")
    names = []
    for v in crd.get("spec", {}).get("versions", []):
        names.append(v.get("name"))
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                raise ConfigError(f"{path} version {version} has no openAPIV3Schema")
            return schema
    raise ConfigError(f"{path} has no version {version!r} (it has {names})")


def load_crd_schema(kind_file: str | os.PathLike[str], version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version`` in a CRD file (parsed once, cached; don't mutate).

    Args:
        kind_file: Absolute path, or a path relative to :func:`schemas_dir` (e.g.
            ``"kserve-v0.20.0/serving.kserve.io_inferenceservices.yaml"``); a bare file name is
            also looked up in the ``kserve-v0.20.0`` folder.
        version: CRD version name, e.g. ``"v1beta1"``.

    Raises:
        ConfigError: The schemas folder, the file or the version is missing.
    """
    return _load_crd_schema_cached(str(_resolve_crd_file(kind_file)), version)


_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a structural CRD schema that rejects fields the CRD does not declare.

    Adds ``additionalProperties: false`` to every object node that lists ``properties`` and does
    not set ``additionalProperties`` itself, except:

    * nodes with ``x-kubernetes-preserve-unknown-fields: true`` (the API server keeps unknown
      fields there; their declared children are still made strict, as the server still prunes
      those),
    * nodes without ``properties`` (``metadata`` is just ``type: object`` in CRDs, and
      ``additionalProperties`` maps such as ``resources.limits`` stay as they are),
    * ``x-kubernetes-embedded-resource`` nodes also allow ``apiVersion``/``kind``/``metadata``.

    ``x-kubernetes-int-or-string`` nodes without an ``anyOf`` get ``anyOf: [integer, string]`` so
    JSON Schema checks them the way the API server does. The input is not modified.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "patternProperties", "definitions"):
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key in ("enum", "required", "default", "example", "x-kubernetes-list-map-keys"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = walk(value)
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
            out["anyOf"] = copy.deepcopy(_INT_OR_STRING)
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            if node.get("x-kubernetes-embedded-resource"):
                for implicit in ("apiVersion", "kind"):
                    out["properties"].setdefault(implicit, {"type": "string"})
                out["properties"].setdefault("metadata", {"type": "object"})
            out["additionalProperties"] = False
        return out

    return walk(schema)


# ObjectMeta fields a client may set; CRD schemas leave metadata untyped, so this is checked here.
_OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "generateName": {"type": "string"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "resourceVersion": {"type": "string"},
        "uid": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
    },
    "additionalProperties": False,
}


@functools.lru_cache(maxsize=16)
def _crd_validator(path: str, version: str) -> Any:
    import jsonschema

    schema = strict_schema(_load_crd_schema_cached(path, version))
    schema = {**schema, "properties": {**schema["properties"], "metadata": _OBJECT_META_SCHEMA}}
    # OpenAPI v3.0 schema objects are a Draft 4 dialect (boolean exclusiveMinimum etc.).
    return jsonschema.Draft4Validator(schema)


def crd_validation_errors(
    obj: Mapping[str, Any], kind_file: str | os.PathLike[str], version: str
) -> list[str]:
    """Every strict-schema violation of ``obj`` as ``"path.to.field: message"`` (empty if valid)."""
    validator = _crd_validator(str(_resolve_crd_file(kind_file)), version)
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for e in errors:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{where}: {e.message}")
    return out


def validate_inference_service(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the strict KServe v0.20.0 InferenceService ``v1beta1`` schema.

    Raises:
        ConfigError: ``obj`` is not a ``serving.kserve.io/v1beta1`` InferenceService or has
            fields the CRD does not declare / values of the wrong type; the message lists all.
    """
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise ConfigError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"{obj.get('apiVersion')!r} {obj.get('kind')!r}"
        )
    errors = crd_validation_errors(obj, ISVC_CRD_FILE, VERSION)
    if errors:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise ConfigError(
            f"InferenceService {name!r} does not match the KServe {KSERVE_SCHEMAS} CRD schema:\n  "
            + "\n  ".join(errors)
        )
