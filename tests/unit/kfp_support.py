"""What the ``modelgate.kfp`` tests share: the isolation fixture, a connected client, the release
package with valid arguments, and helpers that submit and schedule it.

Import the fixtures into a test module (``from tests.unit.kfp_support import isolated_kfp``):
``isolated_kfp`` is autouse there, ``connected_client`` provides the ``client`` fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from modelgate.pipelines import PIPELINES_DIR

from modelgate.kfp import SubmittedRun, connect, schedule, submit
from modelgate.kfp import connection as connection_module
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture

PACKAGE = PIPELINES_DIR / "release.yaml"
PIPELINE = "modelgate-release"
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H200"}
ARGUMENTS: dict[str, Any] = {
    "model_id": "Qwen/Qwen2.5-0.5B-Instruct",
    "model_store": "s3://models/modelgate",
    "tolerations": TOLERATIONS,
    "node_selector": NODE_SELECTOR,
    "accelerator_count": "2",
}


@pytest.fixture(autouse=True)
def isolated_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No endpoint, token or kfp context from the machine running the tests."""
    from kfp.client.client import Client

    for name in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_SA_TOKEN_PATH",
        "KF_PIPELINES_TOKEN",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    # where connect() looks for a pod's projected token
    monkeypatch.setattr(connection_module, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture(name="client")
def connected_client(fake_kfp: FakeKFP) -> Any:  # noqa: F811
    """``client``: a ``kfp.Client`` connected to the ``fake_kfp`` double."""
    return connect(fake_kfp.url)


def submit_release(client: Any, arguments: dict[str, Any] | None = None) -> SubmittedRun:
    """Submit the release package with :data:`ARGUMENTS` (or ``arguments``)."""
    return submit(
        client,
        package_path=PACKAGE,
        pipeline_name=PIPELINE,
        experiment="modelgate-test",
        run_name="release qwen",
        arguments=ARGUMENTS if arguments is None else arguments,
    )


def schedule_release(client: Any, *, cron: str = "0 3 * * 1", **overrides: Any) -> str:
    """Schedule the release package weekly with :data:`ARGUMENTS`; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "cron": cron,
        "package_path": PACKAGE,
        "pipeline_name": PIPELINE,
        "experiment": "modelgate-nightly",
        "job_name": "weekly release",
        "arguments": ARGUMENTS,
    }
    fields.update(overrides)
    return schedule(client, **fields)
