"""Strict validation of Kubernetes objects against KServe's CRD schemas.

:func:`validate_inference_service` checks an object against the InferenceService CRD's ``v1beta1``
``openAPIV3Schema`` made strict by :func:`strict_schema`; :func:`validate_llm_inference_service`
does the same for LLMInferenceService ``v1alpha2`` and :func:`validate_object` for any kind with a
packaged schema. The API server silently prunes unknown fields (``storageURI`` would just vanish),
so strictness is what catches typos.

The schemas are package data, ``modelgate/resources/crds/<plural>.<group>_<version>.json``, read
through :mod:`importlib.resources` so an installed copy needs nothing beside it. They are KServe
v0.20.0's, without descriptions; ``scripts/vendor_crd_schemas.py`` regenerates them and their
``PROVENANCE.md``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from modelgate.errors import ConfigError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

LLM_VERSION = "v1alpha2"
LLM_KIND = "LLMInferenceService"
LLM_API_VERSION = f"{GROUP}/{LLM_VERSION}"

#: The KServe release the packaged schemas come from.
KSERVE_SCHEMAS = "kserve-v0.20.0"

# CRD names (``<plural>.<group>``, a CRD's ``metadata.name``): what :func:`load_crd_schema` and
# :func:`crd_validation_errors` take. They name the packaged files ``<crd>_<version>.json``.
ISVC_CRD_FILE = f"inferenceservices.{GROUP}"
SERVING_RUNTIME_CRD_FILE = f"servingruntimes.{GROUP}"
CLUSTER_SERVING_RUNTIME_CRD_FILE = f"clusterservingruntimes.{GROUP}"
CLUSTER_STORAGE_CONTAINER_CRD_FILE = f"clusterstoragecontainers.{GROUP}"
LLM_ISVC_CRD_FILE = f"llminferenceservices.{GROUP}"

#: (group, kind) -> CRD name, for the kinds with packaged schemas.
CRD_BY_KIND: dict[tuple[str, str], str] = {
    (GROUP, KIND): ISVC_CRD_FILE,
    (GROUP, "ServingRuntime"): SERVING_RUNTIME_CRD_FILE,
    (GROUP, "ClusterServingRuntime"): CLUSTER_SERVING_RUNTIME_CRD_FILE,
    (GROUP, "ClusterStorageContainer"): CLUSTER_STORAGE_CONTAINER_CRD_FILE,
    (GROUP, LLM_KIND): LLM_ISVC_CRD_FILE,
}

_PACKAGE = "modelgate.resources"
_CRDS_FOLDER = "crds"


def packaged_schemas() -> list[tuple[str, str]]:
    """Every packaged ``(crd, version)`` pair, sorted."""
    folder = resources.files(_PACKAGE) / _CRDS_FOLDER
    out = []
    for entry in folder.iterdir():
        stem, dot, ext = entry.name.rpartition(".")
        if ext == "json" and dot and "_" in stem:
            crd, _, version = stem.rpartition("_")
            out.append((crd, version))
    return sorted(out)


def _crd_name(kind: str) -> str:
    """A CRD name for ``kind``: a CRD name itself, or a kind of :data:`CRD_BY_KIND`."""
    if "." in kind:
        return kind
    for (_, known_kind), crd in CRD_BY_KIND.items():
        if known_kind == kind:
            return crd
    known = ", ".join(sorted(k for _, k in CRD_BY_KIND))
    raise ConfigError(f"no packaged CRD schema for kind {kind!r} (known kinds: {known})")


@functools.lru_cache(maxsize=16)
def _load_crd_schema_cached(crd: str, version: str) -> dict[str, Any]:
    resource = resources.files(_PACKAGE) / _CRDS_FOLDER / f"{crd}_{version}.json"
    if not resource.is_file():
        have = [v for c, v in packaged_schemas() if c == crd]
        if have:
            raise ConfigError(
                f"CRD {crd} has no version {version!r} packaged (it has {', '.join(have)})"
            )
        crds = sorted({c for c, _ in packaged_schemas()})
        raise ConfigError(f"no packaged schema for CRD {crd!r} (packaged: {', '.join(crds)})")
    schema = json.loads(resource.read_text(encoding="utf-8"))
    if not isinstance(schema, dict):
        raise ConfigError(f"packaged schema {resource.name} is not a JSON object")
    return schema


def load_crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The packaged ``openAPIV3Schema`` of a CRD version (parsed once, cached; don't mutate).

    Args:
        kind: CRD name, e.g. :data:`ISVC_CRD_FILE` (``"inferenceservices.serving.kserve.io"``),
            or a kind with a packaged schema, e.g. ``"InferenceService"``.
        version: CRD version name, e.g. ``"v1beta1"``.

    Raises:
        ConfigError: No schema is packaged for that CRD or version.
    """
    return _load_crd_schema_cached(_crd_name(kind), version)


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
def _crd_validator(crd: str, version: str) -> Any:
    import jsonschema

    schema = strict_schema(_load_crd_schema_cached(crd, version))
    schema = {**schema, "properties": {**schema["properties"], "metadata": _OBJECT_META_SCHEMA}}
    # OpenAPI v3.0 schema objects are a Draft 4 dialect (boolean exclusiveMinimum etc.).
    return jsonschema.Draft4Validator(schema)


def crd_validation_errors(obj: Mapping[str, Any], kind: str, version: str) -> list[str]:
    """Every strict-schema violation of ``obj`` as ``"path.to.field: message"`` (empty if valid).

    Args:
        obj: The object, e.g. a ServingRuntime manifest.
        kind: CRD name (e.g. :data:`SERVING_RUNTIME_CRD_FILE`) or kind (``"ServingRuntime"``).
        version: CRD version name, e.g. ``"v1alpha1"``.

    Raises:
        ConfigError: No schema is packaged for that CRD or version.
    """
    validator = _crd_validator(_crd_name(kind), version)
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for e in errors:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{where}: {e.message}")
    return out


def validate_object(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the strict packaged schema its ``apiVersion`` and ``kind`` name.

    Raises:
        ConfigError: No schema is packaged for that apiVersion and kind, or ``obj`` has fields
            the CRD does not declare / values of the wrong type; the message lists them all.
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    group, slash, version = str(api_version).rpartition("/")
    crd = CRD_BY_KIND.get((group, str(kind))) if slash else None
    if crd is None:
        known = ", ".join(f"{g}/{k}" for g, k in sorted(CRD_BY_KIND))
        raise ConfigError(
            f"no packaged CRD schema for apiVersion {api_version!r} kind {kind!r} (known: {known})"
        )
    errors = crd_validation_errors(obj, crd, version)
    if errors:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise ConfigError(
            f"{kind} {name!r} does not match the KServe {KSERVE_SCHEMAS} CRD schema "
            f"({crd} {version}):\n  " + "\n  ".join(errors)
        )


def _expect(obj: Mapping[str, Any], api_version: str, kind: str) -> None:
    if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
        raise ConfigError(
            f"expected apiVersion {api_version} kind {kind}, got "
            f"{obj.get('apiVersion')!r} {obj.get('kind')!r}"
        )


def validate_inference_service(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the strict KServe v0.20.0 InferenceService ``v1beta1`` schema.

    Raises:
        ConfigError: ``obj`` is not a ``serving.kserve.io/v1beta1`` InferenceService or has
            fields the CRD does not declare / values of the wrong type; the message lists all.
    """
    _expect(obj, API_VERSION, KIND)
    validate_object(obj)


def validate_llm_inference_service(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the strict KServe v0.20.0 LLMInferenceService ``v1alpha2`` schema.

    Raises:
        ConfigError: ``obj`` is not a ``serving.kserve.io/v1alpha2`` LLMInferenceService or has
            fields the CRD does not declare / values of the wrong type; the message lists all.
    """
    _expect(obj, LLM_API_VERSION, LLM_KIND)
    validate_object(obj)
