"""End to end: tiny model -> olah mirror -> snapshot_download -> lm-eval scores above chance."""

from __future__ import annotations

import filecmp
import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import modelgate
from modelgate.testing.hub_mirror import PublishedModel
from modelgate.testing.tasks import CHANCE_ACCURACY

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

_EVAL_SCRIPT = """
import json, sys
from pathlib import Path
from modelgate.testing.tasks import evaluate_addition
task_dir = Path(sys.argv[1])
scores = {name: evaluate_addition(Path(path), task_dir) for name, path in zip(
    sys.argv[2::2], sys.argv[3::2])}
print("SCORES=" + json.dumps(scores))
"""


@pytest.fixture(scope="module")
def downloaded_model_dir(
    hub_mirror: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from huggingface_hub import snapshot_download

    target = tmp_path_factory.mktemp("downloaded") / "model"
    path = snapshot_download(
        hub_mirror.repo_id, revision="main", endpoint=hub_mirror.endpoint, local_dir=target
    )
    return Path(path)


def _visible_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def test_snapshot_download_gets_every_file(
    downloaded_model_dir: Path, tiny_model_dir: Path
) -> None:
    files = _visible_files(tiny_model_dir)
    assert "model.safetensors" in files
    assert _visible_files(downloaded_model_dir) == files
    _, mismatch, errors = filecmp.cmpfiles(
        tiny_model_dir, downloaded_model_dir, files, shallow=False
    )
    assert not mismatch and not errors


def test_revision_resolves_to_commit_sha(hub_mirror: PublishedModel) -> None:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    api = HfApi(endpoint=hub_mirror.endpoint)
    assert api.model_info(hub_mirror.repo_id, revision="main").sha == hub_mirror.commit_sha
    by_sha = api.model_info(hub_mirror.repo_id, revision=hub_mirror.commit_sha)
    assert by_sha.sha == hub_mirror.commit_sha
    url = hf_hub_url(
        hub_mirror.repo_id, "config.json", revision="main", endpoint=hub_mirror.endpoint
    )
    assert get_hf_file_metadata(url).commit_hash == hub_mirror.commit_sha
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Repo-Commit"] == hub_mirror.commit_sha
    refs = api.list_repo_refs(hub_mirror.repo_id)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", hub_mirror.commit_sha)]


def test_snapshot_cache_is_keyed_by_commit(hub_mirror: PublishedModel, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    path = snapshot_download(
        hub_mirror.repo_id,
        revision="main",
        endpoint=hub_mirror.endpoint,
        cache_dir=tmp_path,
        allow_patterns=["config.json"],
    )
    assert Path(path).name == hub_mirror.commit_sha
    assert (Path(path) / "config.json").is_file()


def test_repo_info_without_revision_is_not_served(hub_mirror: PublishedModel) -> None:
    """Documented olah limitation: ``/api/models/<id>`` 401s for local repos; pass a revision."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_mirror.endpoint).model_info(hub_mirror.repo_id)


def test_lm_eval_trained_beats_untrained(
    downloaded_model_dir: Path, addition_task_dir: Path, untrained_model_dir: Path, tmp_path: Path
) -> None:
    untrained = untrained_model_dir
    hf_home = tmp_path / "hf-home"
    src_root = Path(modelgate.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src_root), os.environ.get("PYTHONPATH")])),
    }
    env.pop("HF_ENDPOINT", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _EVAL_SCRIPT,
            str(addition_task_dir),
            "trained",
            str(downloaded_model_dir),
            "untrained",
            str(untrained),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("SCORES="))
    scores = json.loads(line.removeprefix("SCORES="))
    trained, untrained_acc = scores["trained"]["acc"], scores["untrained"]["acc"]
    logger.info("lm-eval acc: trained=%.2f untrained=%.2f", trained, untrained_acc)
    assert trained > 0.2
    assert trained > untrained_acc + 0.15
    assert untrained_acc < CHANCE_ACCURACY + 0.15
