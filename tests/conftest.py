"""Shared pytest fixtures.

Model fixtures are built locally (no Hugging Face Hub access) and cached across runs under
``$MODELGATE_TEST_CACHE`` or ``<repo>/.cache/test-models``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from modelgate.testing.hub_mirror import PublishedModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def model_cache_dir() -> Path:
    """Return ``$MODELGATE_TEST_CACHE`` or ``<repo>/.cache/test-models``, the model cache."""
    configured = os.environ.get("MODELGATE_TEST_CACHE")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "test-models"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny Llama trained for ~60 s on single-digit addition (built once, then cached)."""
    from modelgate.testing.tiny_model import build_tiny_model

    return build_tiny_model(model_cache_dir() / "tiny-llama").path


@pytest.fixture(scope="session")
def untrained_model_dir() -> Path:
    """The same tiny Llama without training: it scores near chance, so gates must stop it."""
    from modelgate.testing.tiny_model import build_tiny_model

    return build_tiny_model(model_cache_dir() / "tiny-llama-untrained", train_seconds=0).path


@pytest.fixture(scope="session")
def addition_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the ``modelgate_addition`` lm-eval task; use as ``include_path``."""
    from modelgate.testing.tasks import write_addition_task

    task_dir = tmp_path_factory.mktemp("lm-eval-tasks")
    write_addition_task(task_dir)
    return task_dir


@pytest.fixture(scope="session")
def hub_mirror(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublishedModel]:
    """An olah mirror on loopback serving ``tiny_model_dir`` as ``modelgate/tiny-llama@main``.

    Yields a :class:`~modelgate.testing.hub_mirror.PublishedModel` with ``endpoint``, ``repo_id``,
    ``commit_sha`` and ``repos_root`` (publish more repos there while the session runs).
    """
    from modelgate.testing.hub_mirror import LocalHubMirror

    with LocalHubMirror(tmp_path_factory.mktemp("hub-repos")) as mirror:
        yield mirror.publish(tiny_model_dir)
