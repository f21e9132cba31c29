"""Compile every pipeline, or check the committed YAML for drift."""

from __future__ import annotations

import difflib
import importlib
import tempfile
from pathlib import Path
from typing import Any

import yaml
from modelgate.pipelines import PIPELINE_MODULES, PIPELINES_DIR

#: Fields that change with the SDK release, not with the pipeline.
VOLATILE_KEYS = ("sdkVersion",)


def normalize(text: str) -> dict[str, Any]:
    """Parse compiled YAML, dropping volatile fields and the kfp pin in embedded commands."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in VOLATILE_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        if isinstance(node, str) and "kfp==" in node:
            return "\n".join(ln for ln in node.splitlines() if "kfp==" not in ln)
        return node

    return {"documents": strip(docs)}


def compile_module(name: str, package_path: Path) -> Path:
    """Compile pipeline module ``pipelines.<name>`` to ``package_path``."""
    module = importlib.import_module(f"modelgate.pipelines.{name}")
    module.compile_pipeline(str(package_path))
    return package_path


def compile_all(
    output_dir: Path | None = None,
    *,
    image_registry: str | None = None,
    image_tag: str | None = None,
) -> list[Path]:
    """Write ``<name>.yaml`` for every pipeline module.

    Args:
        output_dir: Where to write; default beside the pipeline modules (the committed YAML).
        image_registry: Point the steps at images pushed to this registry instead.
        image_tag: ... with this tag (default: the package version).
    """
    from modelgate.images import retag

    folder = output_dir or PIPELINES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PIPELINE_MODULES:
        path = compile_module(name, folder / f"{name}.yaml")
        if image_registry or image_tag:
            path.write_text(retag(path.read_text(), registry=image_registry, tag=image_tag))
        written.append(path)
    return written


def drift() -> dict[str, str]:
    """Recompile into a temp dir; return ``{name: unified diff}`` for each drifted pipeline."""
    problems: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PIPELINE_MODULES:
            committed = PIPELINES_DIR / f"{name}.yaml"
            fresh = compile_module(name, Path(tmp) / f"{name}.yaml")
            if not committed.is_file():
                problems[name] = f"{committed.name} is missing; run `modelgate compile`"
                continue
            want = yaml.safe_dump(normalize(fresh.read_text()), sort_keys=True).splitlines()
            have = yaml.safe_dump(normalize(committed.read_text()), sort_keys=True).splitlines()
            if want != have:
                diff = difflib.unified_diff(have, want, "committed", "recompiled", lineterm="")
                problems[name] = "\n".join(list(diff)[:80])
    return problems


if __name__ == "__main__":
    for path in compile_all():
        print(path)
