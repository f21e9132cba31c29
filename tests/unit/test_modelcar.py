"""modelgate.modelcar without a registry: references, annotations, files, and bad input that
must fail before anything is pulled or pushed (the e2e test pushes to a loopback registry)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelgate import __version__
from modelgate.cli import app
from modelgate.download import MANIFEST_NAME
from modelgate.errors import ConfigError
from modelgate.modelcar import (
    ANNOTATION_MODELGATE_VERSION,
    ANNOTATION_QUANT_SCHEME,
    ANNOTATION_REVISION,
    ANNOTATION_SOURCE,
    MAX_ANNOTATION_CHARS,
    Modelcar,
    ModelcarError,
    build_modelcar,
    check_repository,
    check_tag,
    default_tag,
    is_loopback,
    model_files,
    modelcar_annotations,
)
from modelgate.quantize import RECORD_NAME
from modelgate.storage import MARKER
from tests.doubles.model_registry import fake_model_registry  # noqa: F401

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quay.io/org/models", "quay.io/org/models"),
        ("oci://quay.io/org/models", "quay.io/org/models"),
        ("docker://ghcr.io/a/b/c", "ghcr.io/a/b/c"),
        ("127.0.0.1:5000/models", "127.0.0.1:5000/models"),
        ("localhost:5000/tiny/model-x", "localhost:5000/tiny/model-x"),
        ("registry.internal:443/a__b/c.d", "registry.internal:443/a__b/c.d"),
    ],
)
def test_check_repository_accepts_full_references(text, expected):
    assert check_repository(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("quay.io/Org/models", "lower case"),
        ("quay.io/org/models:v1", "no tag or digest"),
        (f"quay.io/org/models@{DIGEST}", "no tag or digest"),
        ("quay.io", "registry/path"),
        ("org/models", "names no registry host"),
        ("quay.io/org/models/", "registry/path"),
        ("quay.io/org/-x", "registry/path"),
        ("", "registry/path"),
    ],
)
def test_check_repository_refuses_what_is_not_registry_path(text, match):
    with pytest.raises(ConfigError, match=match):
        check_repository(text)


def test_tags():
    assert check_tag("W4A16-3f2a.1_x") == "W4A16-3f2a.1_x"
    for bad in ("-x", ".x", "a" * 129, "a/b", "a:b", ""):
        with pytest.raises(ConfigError, match="image tag"):
            check_tag(bad)
    assert default_tag("s3://bucket/org--m/abc/W4A16-0123abcd") == "W4A16-0123abcd"
    assert default_tag("file:///store/m/c/base-9f/") == "base-9f"
    assert default_tag("s3://b/m/c/W8A8-77/" + "0f" * 16) == "W8A8-77"  # the writer folder
    assert default_tag("/models/my model!") == "my-model-"
    assert default_tag("s3://bucket/...") == "latest"


def test_only_loopback_registries_are_plain_http():
    for repo in ("127.0.0.1:5000/m", "localhost/m", "localhost:80/m", "[::1]:5000/m"):
        assert is_loopback(repo), repo
    for repo in ("quay.io/m", "127.0.0.2:5000/m", "localhost.example.com/m", "10.0.0.1:5000/m"):
        assert not is_loopback(repo), repo


def _model(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(os.urandom(64))
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / MARKER).write_text("{}")
    return folder


def test_model_files_are_every_file_but_the_store_marker(tmp_path):
    folder = _model(tmp_path / "m")
    names = [p.relative_to(folder).as_posix() for p in model_files(folder)]
    assert names == ["config.json", "model.safetensors", "sub/tokenizer.json"]


def test_a_stored_folder_packages_only_what_its_marker_lists(tmp_path):
    folder = _model(tmp_path / "m")
    (folder / "stray.bin").write_bytes(b"not stored")
    listed = ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert [p.relative_to(folder).as_posix() for p in model_files(folder, listed=listed)] == listed


def test_model_files_refuse_links_and_empty_folders(tmp_path):
    folder = _model(tmp_path / "m")
    (folder / "weights.bin").symlink_to(folder / "model.safetensors")
    with pytest.raises(ConfigError, match=r"symbolic link.*cp -rL"):
        model_files(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no file"):
        model_files(tmp_path / "empty")


def test_annotations_come_from_the_stored_records(tmp_path):
    folder = _model(tmp_path / "m")
    (folder / MANIFEST_NAME).write_text(
        json.dumps(
            {"repo_id": "org/tiny", "commit_sha": "c0ffee", "endpoint": "https://hub.example"}
        )
    )
    (folder / RECORD_NAME).write_text(json.dumps({"scheme": "W4A16"}))
    notes = modelcar_annotations(
        folder, model_uri="s3://b/org/tiny/c0ffee/W4A16-1", base_image="docker://busybox:1"
    )
    assert notes[ANNOTATION_SOURCE] == "https://hub.example/org/tiny"
    assert notes[ANNOTATION_REVISION] == "c0ffee"
    assert notes[ANNOTATION_QUANT_SCHEME] == "W4A16"
    assert notes[ANNOTATION_MODELGATE_VERSION] == __version__
    assert notes["org.opencontainers.image.base.name"] == "busybox:1"
    assert notes["modelgate.model_uri"] == "s3://b/org/tiny/c0ffee/W4A16-1"
    # given values win over the records
    given = modelcar_annotations(
        folder, model_uri="m", base_image="b", repo_id="x/y", commit_sha="1", scheme="none"
    )
    assert given[ANNOTATION_SOURCE] == "https://hub.example/x/y"
    assert (given[ANNOTATION_REVISION], given[ANNOTATION_QUANT_SCHEME]) == ("1", "none")


def test_annotations_treat_the_records_as_untrusted(tmp_path):
    folder = _model(tmp_path / "m")
    (folder / MANIFEST_NAME).write_text(
        json.dumps({"repo_id": "org/x\n\x1b[31mred", "commit_sha": "a" * 5000, "endpoint": 3})
    )
    (folder / RECORD_NAME).write_text("[1, 2]")  # not an object: ignored
    notes = modelcar_annotations(folder, model_uri="/local/path", base_image="oci:/tmp/base:1")
    assert notes[ANNOTATION_SOURCE] == "https://huggingface.co/org/x  [31mred"
    assert len(notes[ANNOTATION_REVISION]) == MAX_ANNOTATION_CHARS
    assert ANNOTATION_QUANT_SCHEME not in notes
    # paths of this machine are not recorded
    assert "modelgate.model_uri" not in notes
    assert "org.opencontainers.image.base.name" not in notes
    assert all("\n" not in v and "\x1b" not in v for v in notes.values())


def test_uri_names_the_digest():
    car = Modelcar(repository="quay.io/org/m", tag="t", digest=DIGEST)
    assert car.uri == f"oci://quay.io/org/m@{DIGEST}"
    assert car.to_dict()["uri"] == car.uri


def test_missing_skopeo_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    folder = _model(tmp_path / "m")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ModelcarError, match=r"^skopeo is not on PATH: install skopeo") as info:
        build_modelcar(str(folder), repository="127.0.0.1:5000/m")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not a readable Docker config"), ("[]", "no 'auths'"), ('{"a": 1}', "no 'auths'")],
)
def test_a_bad_auth_file_fails_before_anything_runs(tmp_path, monkeypatch, content, match):
    folder = _model(tmp_path / "m")
    calls = tmp_path / "calls"
    _fake_skopeo(tmp_path / "bin", calls)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    auth = tmp_path / "auth.json"
    if content is not None:
        auth.write_text(content)
    with pytest.raises(ConfigError, match=match):
        build_modelcar(str(folder), repository="127.0.0.1:5000/m", authfile=auth)
    assert not calls.exists()


def _fake_skopeo(bindir: Path, calls: Path, *, fail: str = "") -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "skopeo"
    body = f'echo "$@" >> {calls}\n' + (f'echo "{fail}" >&2\nexit 1\n' if fail else "")
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_a_failed_base_copy_names_the_base_and_skopeos_reason(tmp_path, monkeypatch):
    folder = _model(tmp_path / "m")
    calls = tmp_path / "calls"
    _fake_skopeo(tmp_path / "bin", calls, fail="manifest unknown: busybox:nope")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    with pytest.raises(ModelcarError, match=r"copying the base image .*busybox:nope") as info:
        build_modelcar(str(folder), repository="quay.io/org/m", base_image="quay.io/x/busybox:1")
    assert "manifest unknown" in str(info.value)
    (call,) = calls.read_text().splitlines()
    # a registry that is not loopback keeps TLS verification
    assert "tls-verify=false" not in call and "docker://quay.io/x/busybox:1" in call
    assert list((tmp_path / "work").iterdir()) == []  # nothing half-done left behind


def test_cli_exit_codes(tmp_path, monkeypatch):
    bad = subprocess.run(
        [sys.executable, "-m", "modelgate.cli", "package", "--model", str(tmp_path),
         "--repository", "Bad"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "is not registry/path" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    runner = CliRunner()
    folder = _model(tmp_path / "m")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    missing = runner.invoke(
        app, ["package", "--model", str(folder), "--repository", "127.0.0.1:5000/m"]
    )
    assert missing.exit_code == 1
    assert "skopeo is not on PATH" in missing.output


# --- the registry records the modelcar -------------------------------------------------------

CAR = f"oci://quay.io/org/m@{DIGEST}"


@pytest.mark.usefixtures("no_registry_env")
def test_kubeflow_records_the_modelcar_as_a_second_artifact(fake_model_registry):  # noqa: F811
    from modelgate.registry import record_modelcar
    from modelgate.registry.base import MODELCAR_ARTIFACT, RegisterRequest
    from modelgate.registry.kubeflow import KubeflowModelRegistry

    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    record = backend.register_version(
        RegisterRequest(model_name="org--m", version_name="v1", uri="s3://b/org--m/v1")
    )
    url = fake_model_registry.url
    record_modelcar(record=record, registry_url=url, uri=CAR)
    record_modelcar(record=record, registry_url=url, uri=CAR)  # a retried step: no second one

    def artifacts() -> dict[str, str]:
        found = fake_model_registry.artifacts_of(str(record.model_version_id))
        return {a["name"]: a["uri"] for a in found}

    assert artifacts() == {"org--m": "s3://b/org--m/v1", MODELCAR_ARTIFACT: CAR}
    # the stored model stays the version's model artifact (production lookups, model-registry://)
    assert backend.find_version("org--m", "v1").uri == "s3://b/org--m/v1"
    newer = CAR.replace("ab" * 32, "cd" * 32)
    record_modelcar(record=record, registry_url=url, uri=newer)
    assert artifacts() == {"org--m": "s3://b/org--m/v1", MODELCAR_ARTIFACT: newer}


def test_mlflow_records_the_modelcar_as_a_tag(tmp_path, no_registry_env):
    from modelgate.registry import (
        candidate_request,
        local_registry_url,
        record_modelcar,
        registry_from_url,
    )
    from modelgate.registry.base import MODELCAR_PROPERTY

    url = local_registry_url(tmp_path)
    backend = registry_from_url(url)
    assert backend is not None
    record = backend.register_version(
        candidate_request(
            model_uri="s3://b/org--m/c/W4A16-1",
            repo_id="org/m",
            revision="main",
            commit_sha="0" * 40,
            scheme="W4A16",
            pipeline_run_id="run-1",
        )
    )
    record_modelcar(record=record, registry_url=url, uri=CAR)
    mv = backend._find(record.model_name, record.version_name)  # type: ignore[attr-defined]
    assert mv.tags[MODELCAR_PROPERTY] == CAR
    assert mv.source == "s3://b/org--m/c/W4A16-1"


def test_record_modelcar_refuses_what_is_not_a_digest_uri_and_skips_without_registry():
    from modelgate.registry import record_modelcar
    from modelgate.registry.base import RegistryRecord

    skipped = RegistryRecord(status="skipped", message="no registry")
    with pytest.raises(ConfigError, match="not oci://"):
        record_modelcar(record=skipped, registry_url=None, uri="oci://quay.io/org/m:latest")
    record_modelcar(record=skipped, registry_url=None, uri=CAR)  # nothing to record: no error


def test_run_parameters_check_the_repository_and_refuse_a_local_target():
    from modelgate.params import RedeployParams, resolve_params

    params = resolve_params(overrides={"modelcar_repository": "oci://quay.io/org/m"})
    assert params.modelcar_repository == "quay.io/org/m"
    assert resolve_params().modelcar_repository == ""  # off by default
    with pytest.raises(ConfigError, match=r"modelcar_repository: .*is not registry/path"):
        resolve_params(overrides={"modelcar_repository": "Quay.io/Org"}, model=RedeployParams)
    with pytest.raises(ConfigError, match="needs a cluster deploy target"):
        resolve_params(overrides={"modelcar_repository": "quay.io/o/m", "deploy_target": "local"})
