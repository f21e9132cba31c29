#!/usr/bin/env python3
"""Vendor KServe's CRD schemas into modelgate's package data (run by a developer, not at run time).

modelgate validates the Kubernetes objects it renders against KServe's CRD ``openAPIV3Schema``s.
An installed copy of modelgate cannot read the ``shared/schemas`` folder kept beside the
repository, so this script copies the schemas it needs into
``src/modelgate/resources/crds/<plural>.<group>_<version>.json``, read at run time by
:mod:`modelgate.deploy.crd` through :mod:`importlib.resources`.

Each output file is one CRD version's ``openAPIV3Schema`` with every ``description`` keyword
removed (a ``description`` *property* declared under ``properties`` is kept), written as compact,
deterministic JSON (sorted keys, no spaces). ``PROVENANCE.md`` beside them records where they come
from. The generated files are committed.

Usage::

    python scripts/vendor_crd_schemas.py                  # (re)write the packaged copies
    python scripts/vendor_crd_schemas.py --check          # exit 1 if they differ from the source
    python scripts/vendor_crd_schemas.py --source DIR     # another shared/schemas folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "schemas"
DEST = REPO / "src" / "modelgate" / "resources" / "crds"

UPSTREAM_REPO = "kserve/kserve"
UPSTREAM_TAG = "v0.20.0"
UPSTREAM_COMMIT = "1fb781055dd1567164358233e1125142ca6ef1fe"
SOURCE_FOLDER = f"kserve-{UPSTREAM_TAG}"
PROVENANCE = "PROVENANCE.md"


@dataclass(frozen=True)
class CrdSource:
    """One CRD version to vendor: ``file`` (in :data:`SOURCE_FOLDER`) and its ``version``."""

    file: str
    version: str


CRDS: tuple[CrdSource, ...] = (
    CrdSource("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    CrdSource("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    CrdSource("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1"),
    CrdSource("serving.kserve.io_clusterstoragecontainers.yaml", "v1alpha1"),
    CrdSource("serving.kserve.io_llminferenceservices.yaml", "v1alpha2"),
)

# Keywords whose value is a map of name -> schema: the names are data, not keywords.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "dependencies"})
# Keywords whose value is a schema, a list of schemas, or a boolean.
_SCHEMA_VALUES = frozenset({"items", "additionalItems", "additionalProperties", "not"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})

try:
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


class VendorError(Exception):
    """The source folder or a CRD in it is not what this script expects."""


def strip_descriptions(schema: Any) -> tuple[Any, int]:
    """A copy of an OpenAPI v3 schema without its ``description`` keywords, and how many went.

    Only ``description`` used as a schema keyword holding a string is dropped. Property names
    (keys of ``properties`` and the like) are kept whatever they are, so a field called
    ``description`` stays declared, and literal values (``default``, ``enum``, ``example``,
    ``x-kubernetes-*`` extensions) are copied as they are.
    """
    removed = 0

    def walk(node: Any) -> Any:
        nonlocal removed
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                removed += 1
            elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
                out[key] = {name: walk(sub) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [walk(sub) for sub in value]
            elif key in _SCHEMA_VALUES:
                out[key] = [walk(sub) for sub in value] if isinstance(value, list) else walk(value)
            else:
                out[key] = value
        return out

    return walk(schema), removed


def to_json(schema: Mapping[str, Any]) -> str:
    """Compact, deterministic JSON (sorted keys, no spaces) with a final newline."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


@dataclass(frozen=True)
class Vendored:
    """One packaged schema: its output ``name``, where it came from, and its JSON ``text``."""

    name: str
    source: CrdSource
    kind: str
    source_sha256: str
    descriptions_removed: int
    text: str


def vendor_one(source_dir: Path, crd: CrdSource) -> Vendored:
    """Read ``crd`` from ``source_dir/kserve-v0.20.0`` and derive its packaged JSON.

    Raises:
        VendorError: The file is missing, not a CRD, or lacks the version or its schema.
    """
    path = source_dir / SOURCE_FOLDER / crd.file
    if not path.is_file():
        raise VendorError(f"{path} does not exist")
    raw = path.read_bytes()
    doc = yaml.load(raw, Loader=_YamlLoader)  # noqa: S506 - a safe loader (C or pure Python)
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise VendorError(f"{path} is not a CustomResourceDefinition")
    spec = doc.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (isinstance(group, str) and isinstance(plural, str) and isinstance(kind, str)):
        raise VendorError(f"{path} lacks spec.group, spec.names.plural or spec.names.kind")
    versions = spec.get("versions") or []
    for version in versions:
        if version.get("name") == crd.version:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                raise VendorError(f"{path} version {crd.version} has no openAPIV3Schema")
            stripped, removed = strip_descriptions(schema)
            return Vendored(
                name=f"{plural}.{group}_{crd.version}.json",
                source=crd,
                kind=kind,
                source_sha256=hashlib.sha256(raw).hexdigest(),
                descriptions_removed=removed,
                text=to_json(stripped),
            )
    found = [v.get("name") for v in versions]
    raise VendorError(f"{path} has no version {crd.version!r} (it has {found})")


def provenance(vendored: Sequence[Vendored]) -> str:
    """The text of ``PROVENANCE.md`` for ``vendored``."""
    rows = "\n".join(
        f"| `{v.name}` | {v.kind} | `{SOURCE_FOLDER}/{v.source.file}` | `{v.source.version}` "
        f"| `{v.source_sha256}` | {v.descriptions_removed} |"
        for v in vendored
    )
    return f"""# Provenance of the packaged KServe CRD schemas

Generated by `scripts/vendor_crd_schemas.py`; do not edit these files by hand.

- Upstream: [{UPSTREAM_REPO}](https://github.com/{UPSTREAM_REPO}), tag `{UPSTREAM_TAG}`,
  commit `{UPSTREAM_COMMIT}`,
  read from the `shared/schemas/{SOURCE_FOLDER}/` folder beside the modelgate repository.
- License: Apache License 2.0 (Apache-2.0), Copyright The KServe Authors.
- Changes: each file is the `openAPIV3Schema` of one CRD version with every `description`
  keyword removed (properties named `description` are kept); nothing else was changed. It is
  written as compact JSON with sorted keys.

| File | Kind | Source file | Version | Source SHA-256 | Descriptions removed |
| --- | --- | --- | --- | --- | --- |
{rows}

## Regenerating

From the repository root, with the upstream CRDs in `../shared/schemas/{SOURCE_FOLDER}/`:

```console
python scripts/vendor_crd_schemas.py                 # rewrite these files
python scripts/vendor_crd_schemas.py --check         # exit 1 if they are out of date
python scripts/vendor_crd_schemas.py --source DIR    # read DIR/{SOURCE_FOLDER}/ instead
```

For a new KServe release, update the tag, commit and file list in the script first.
"""


def render(source_dir: Path) -> dict[str, str]:
    """Every file the script writes into the ``crds`` folder: name -> text.

    Raises:
        VendorError: See :func:`vendor_one`.
    """
    vendored = [vendor_one(source_dir, crd) for crd in CRDS]
    files = {v.name: v.text for v in vendored}
    files[PROVENANCE] = provenance(vendored)
    return files


def _current(dest: Path) -> dict[str, str]:
    """The packaged files there are now (the JSON schemas and ``PROVENANCE.md``)."""
    if not dest.is_dir():
        return {}
    paths = [*dest.glob("*.json"), dest / PROVENANCE]
    return {p.name: p.read_text(encoding="utf-8") for p in paths if p.is_file()}


def differences(expected: Mapping[str, str], dest: Path) -> list[str]:
    """Human-readable differences between ``expected`` and the files in ``dest``."""
    current = _current(dest)
    out = [f"missing: {name}" for name in sorted(expected.keys() - current.keys())]
    out += [f"not generated (stale): {name}" for name in sorted(current.keys() - expected.keys())]
    out += [
        f"differs: {name}"
        for name in sorted(expected.keys() & current.keys())
        if expected[name] != current[name]
    ]
    return out


def write(files: Mapping[str, str], dest: Path) -> None:
    """Write ``files`` into ``dest`` and remove JSON schemas there that are no longer generated."""
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (dest / name).write_text(text, encoding="utf-8", newline="\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder holding {SOURCE_FOLDER}/ (default: ../shared/schemas beside the repo)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the packaged files differ from what would be written",
    )
    parser.add_argument("--dest", type=Path, default=DEST, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        files = render(args.source)
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        diffs = differences(files, args.dest)
        if diffs:
            print(f"{args.dest} is out of date; run {Path(__file__).name}:", file=sys.stderr)
            for line in diffs:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"{args.dest}: up to date ({len(files)} files)")
        return 0
    write(files, args.dest)
    size = sum(len(text.encode("utf-8")) for text in files.values())
    print(f"wrote {len(files)} files ({size} bytes) to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
