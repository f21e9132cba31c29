"""``connect``: host, token sources and the health probe, against the KFP v2beta1 REST double."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from modelgate.errors import ConfigError, KFPAuthError, KFPConnectionError, SubmitError
from modelgate.kfp import connect, upload
from modelgate.kfp import connection as connection_module
from modelgate.processes import free_port
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture
from tests.unit.kfp_support import PACKAGE, PIPELINE, isolated_kfp  # noqa: F401 - fixture

pytestmark = pytest.mark.unit


# --- connect ------------------------------------------------------------------------------------
def test_unreachable_host_fails_fast_naming_the_host_and_the_fix() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(KFPConnectionError) as info:
        connect(host, timeout=5.0)

    assert time.monotonic() - started < 5.0
    message = str(info.value)
    assert host in message and "connection refused" in message
    assert "kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80" in message
    assert "KF_PIPELINES_ENDPOINT" in message


def test_a_host_that_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()

        with pytest.raises(KFPConnectionError, match="no answer within 0.5s"):
            connect(host, timeout=0.5)

        assert time.monotonic() - started < 3.0


def test_no_endpoint_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="KF_PIPELINES_ENDPOINT"):
        connect()


def test_endpoint_comes_from_kfps_own_variable(
    fake_kfp: FakeKFP,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", fake_kfp.url)

    client = connect()

    assert client.get_pipeline_id(PIPELINE) is None
    assert fake_kfp.calls("get_healthz")


def test_a_url_that_is_not_the_pipelines_api_is_named(fake_kfp: FakeKFP) -> None:  # noqa: F811
    with pytest.raises(SubmitError, match="not a Kubeflow Pipelines 2.x API endpoint"):
        connect(fake_kfp.url + "/pipeline")


def test_missing_token_against_a_token_enforcing_server_names_the_fix() -> None:
    fake = FakeKFP(token="s3cret").start()
    try:
        with pytest.raises(KFPAuthError) as info:
            connect(fake.url)
        message = str(info.value)
        assert "token is missing" in message
        assert "--token" in message and "KF_PIPELINES_SA_TOKEN_PATH" in message

        with pytest.raises(KFPAuthError, match="token was refused"):
            connect(fake.url, token="wrong")

        client = connect(fake.url, token="s3cret")
        upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
        assert fake.calls("upload_pipeline")[0].authorization == "Bearer s3cret"
    finally:
        fake.stop()


def test_token_file_named_by_kf_pipelines_sa_token_path_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    fake = FakeKFP(token="from-the-file").start()
    try:
        client = connect(fake.url)
        pipeline_id, _ = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
        assert pipeline_id in fake.pipelines
    finally:
        fake.stop()


def test_a_pods_projected_token_is_used_when_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # connect() looks the path up in modelgate.kfp.connection: patching it there takes effect
    projected = tmp_path / "projected-token"
    projected.write_text("from-the-pod\n")
    monkeypatch.setattr(connection_module, "DEFAULT_SA_TOKEN_PATH", str(projected))
    fake = FakeKFP(token="from-the-pod").start()
    try:
        client = connect(fake.url)
        upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
        assert fake.calls("upload_pipeline")[0].authorization == "Bearer from-the-pod"
    finally:
        fake.stop()


def test_without_any_token_source_no_token_is_sent(fake_kfp: FakeKFP) -> None:  # noqa: F811
    # the autouse isolation points DEFAULT_SA_TOKEN_PATH at a file that does not exist
    client = connect(fake_kfp.url)
    upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)

    assert {r.authorization for r in fake_kfp.requests} == {None}


def test_a_missing_token_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "/nonexistent/token")
    with pytest.raises(ConfigError, match="KF_PIPELINES_SA_TOKEN_PATH=/nonexistent/token"):
        connect("http://127.0.0.1:1")


# --- backend version ----------------------------------------------------------------------------
# The API server's v2beta1 GetHealthzResponse declares multi_user only
# (kubeflow/pipelines backend/api/v2beta1/healthz.proto); the UI's proxy answers its build info
# with apiServerTagName (frontend/server/handlers/healthz.ts).
@pytest.mark.parametrize("tag", ["2.14.1", "v2.3.0", "1.8.5"])
def test_a_backend_older_than_2_15_is_refused_before_anything_is_uploaded(
    fake_kfp: FakeKFP,  # noqa: F811
    tag: str,
) -> None:
    fake_kfp.tag_name = tag

    with pytest.raises(ConfigError) as info:
        connect(fake_kfp.url)

    message = str(info.value)
    assert f"Kubeflow Pipelines {tag} is too old" in message
    assert ">= 2.15.0" in message and "CreateContainerConfigError" in message
    assert not fake_kfp.calls("upload_pipeline")


@pytest.mark.parametrize("tag", ["2.15.0", "2.17.3", "v2.16.0", None, "master-dev"])
def test_a_recent_or_unnamed_backend_is_accepted(
    fake_kfp: FakeKFP,  # noqa: F811
    tag: str | None,
) -> None:
    fake_kfp.tag_name = tag

    client = connect(fake_kfp.url)

    assert client.get_pipeline_id(PIPELINE) is None
