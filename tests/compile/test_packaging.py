"""The installed package: self-contained, everything under ``modelgate``, usable from anywhere.

A wheel built from this tree is installed with ``pip install --target`` into a fresh folder
and the CLI runs from an empty directory with that folder first on ``sys.path``: nothing may
come from the checkout (no ``../shared``, no ``components``/``pipelines`` top-level packages,
no path relative to the repository).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.compile

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_of_the_tree_is_installed_under_modelgate():
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = setuptools["package-dir"]
    found = set()
    for prefix, folder in folders.items():
        base = REPO / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base).parts
            name = ".".join(([prefix] if prefix else []) + list(rel))
            if prefix == "" and not name.startswith("modelgate"):
                continue
            found.add(name)
    assert found == listed, f"missing from pyproject: {found - listed}; stale: {listed - found}"
    assert all(p == "modelgate" or p.startswith("modelgate.") for p in listed)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree installed into a fresh folder (its dependencies come from the
    test environment, which has them all)."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("modelgate-*.whl")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        timeout=300,
    )
    return target


def _cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODELGATE_SCHEMAS", "PYTHONPATH"))
    }
    env["PYTHONPATH"] = str(site)  # first on sys.path: the installed copy, not the checkout
    return subprocess.run(
        [sys.executable, "-m", "modelgate.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_wheel_holds_only_modelgate(installed):
    tops = {p.name for p in installed.iterdir()}
    assert {"components", "pipelines", "tests", "scripts"}.isdisjoint(tops), tops
    assert "modelgate" in tops
    data = installed / "modelgate"
    assert (data / "pipelines" / "release.yaml").is_file()
    assert (data / "pipelines" / "redeploy.yaml").is_file()
    assert (data / "resources" / "crds" / "PROVENANCE.md").is_file()
    assert (data / "py.typed").is_file()


def test_the_installed_cli_runs_from_an_empty_directory(installed, tmp_path):
    where = _cli(installed, tmp_path, "--version")
    assert where.returncode == 0 and where.stdout.startswith("modelgate "), where.stderr
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import modelgate, modelgate.pipelines as p; "
            "print(modelgate.__file__); print(p.__file__)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(installed)) for line in probe.stdout.split()), probe.stdout

    render = _cli(installed, tmp_path, "render", "--name", "m", "--storage-uri", "s3://models/m/")
    assert render.returncode == 0, render.stderr
    isvc = yaml.safe_load(render.stdout)
    assert isvc["kind"] == "InferenceService"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/m/"

    check = _cli(installed, tmp_path, "compile", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "up to date" in check.stdout

    helps = _cli(installed, tmp_path, "submit", "--help")
    assert helps.returncode == 0 and "--dry-run" in helps.stdout, helps.stderr
    assert not list(tmp_path.iterdir()), "a command wrote into the directory it ran from"


def test_wheel_metadata_names_the_console_script(installed):
    (dist,) = installed.glob("modelgate-*.dist-info")
    entry_points = (dist / "entry_points.txt").read_text()
    assert "modelgate = modelgate.cli:main" in entry_points
    records = (dist / "RECORD").read_text()
    assert "modelgate/resources/crds/" in records
