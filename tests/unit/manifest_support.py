"""What the tests of ``manifests/`` share: building a kustomization the way users apply it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def kustomize(path: Path) -> list[dict]:
    """The documents ``kubectl kustomize path`` builds; skips the test without ``kubectl``."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (needed for 'kubectl kustomize')")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]
