"""Modelcars end to end: a stored tiny model is built into a modelcar, pushed to a loopback OCI
registry (Debian's docker-registry), pulled back with skopeo, unpacked and compared byte for
byte with the stored model; its annotations, the busybox shell KServe runs in it, and the
InferenceService that serves it by digest are checked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modelgate import __version__
from modelgate.deploy import DeploySpec, crd, kserve
from modelgate.download import MANIFEST_NAME
from modelgate.modelcar import (
    ANNOTATION_MODELGATE_VERSION,
    ANNOTATION_QUANT_SCHEME,
    ANNOTATION_REVISION,
    ANNOTATION_SOURCE,
    build_modelcar,
)
from modelgate.quantize import RECORD_NAME
from modelgate.storage import MARKER, fetch, open_store
from modelgate.testing.oci_registry import (
    busybox_base_layout,
    busybox_missing,
    image_manifests,
    oci_registry,
    pull_layout,
    registry_missing,
    skopeo_missing,
    unpack_layers,
)
from tests.e2e.helpers import run_cli

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(registry_missing() or skopeo_missing() or busybox_missing()),
        reason=str(registry_missing() or skopeo_missing() or busybox_missing()),
    ),
]

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    with oci_registry(tmp_path_factory.mktemp("oci-registry")) as address:
        yield address


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return busybox_base_layout(tmp_path_factory.mktemp("busybox") / "layout")


def _stored_model(s3_env, untrained_model_dir: Path, tmp_path: Path) -> str:
    """The tiny model stored in S3 the way the quantize step leaves a candidate: its files,
    the download manifest and a quantization record."""
    bucket = s3_env.make_bucket("modelcars")
    store = open_store(f"s3://{bucket}/store")
    key = f"org--tiny/{COMMIT}/W4A16-0123abcd"
    with store.writer(key, source="test") as out:
        shutil.copytree(untrained_model_dir, out, dirs_exist_ok=True)
        (out / MANIFEST_NAME).write_text(json.dumps({"repo_id": "org/tiny", "commit_sha": COMMIT}))
        (out / RECORD_NAME).write_text(json.dumps({"scheme": "W4A16"}))
    return store.uri(key)


def test_stored_model_round_trips_through_the_registry(
    s3_env, untrained_model_dir, registry, base, tmp_path
):
    uri = _stored_model(s3_env, untrained_model_dir, tmp_path)
    car = build_modelcar(uri, repository=f"{registry}/org/tiny", base_image=base)
    assert car.uri == f"oci://{registry}/org/tiny@{car.digest}"
    assert car.tag == "W4A16-0123abcd"

    layout = pull_layout(f"{registry}/org/tiny@{car.digest}", tmp_path / "pulled")
    (manifest,) = image_manifests(layout)
    notes = manifest["annotations"]
    assert notes[ANNOTATION_SOURCE] == "https://huggingface.co/org/tiny"
    assert notes[ANNOTATION_REVISION] == COMMIT
    assert notes[ANNOTATION_QUANT_SCHEME] == "W4A16"
    assert notes[ANNOTATION_MODELGATE_VERSION] == __version__
    assert notes["modelgate.model_uri"] == uri
    # the busybox layer, then one uncompressed layer per model file, titled with its name
    model_layers = manifest["layers"][1:]
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in model_layers] == [
        Path(f).name for f in car.files
    ]
    assert {layer["mediaType"] for layer in model_layers} == {
        "application/vnd.oci.image.layer.v1.tar"
    }

    root = unpack_layers(layout, manifest, tmp_path / "rootfs")
    stored = fetch(uri, dest=tmp_path / "stored")
    expected = sorted(
        p.relative_to(stored).as_posix()
        for p in stored.rglob("*")
        if p.is_file() and p.name != MARKER
    )
    unpacked = sorted(
        p.relative_to(root / "models").as_posix()
        for p in (root / "models").rglob("*")
        if p.is_file()
    )
    assert unpacked == expected == sorted(car.files)
    for name in expected:
        assert (root / "models" / name).read_bytes() == (stored / name).read_bytes(), name
    assert car.bytes == sum((stored / name).stat().st_size for name in expected)

    if os.geteuid() == 0:  # KServe's modelcar-init check, run with the image's own shell
        # kserve pkg/webhook/admission/pod/storage_initializer_injector.go createModelInitContainer
        check = subprocess.run(
            ["chroot", str(root), "/bin/sh", "-c", '[ -d /models ] && [ "$(ls -A /models)" ]'],
            capture_output=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr

    # the same stored model again, downloaded again: the same layers, which the registry (and
    # a node) stores once; only the config's history times differ
    again = build_modelcar(uri, repository=f"{registry}/org/tiny", base_image=base, tag="again")
    (second,) = image_manifests(pull_layout(f"{registry}/org/tiny:again", tmp_path / "again"))
    assert [x["digest"] for x in second["layers"]] == [x["digest"] for x in manifest["layers"]]
    assert again.files == car.files

    # the InferenceService serving it by digest validates against the KServe CRDs
    isvc = kserve.build_inference_service(
        DeploySpec(name="tiny", namespace="ns", storage_uri=car.uri)
    )
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == car.uri
    crd.validate_inference_service(isvc)


def test_cli_prints_the_digest_uri(untrained_model_dir, registry, base, tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {}}))
    result = run_cli(
        "package",
        "--model",
        str(untrained_model_dir),
        "--repository",
        f"{registry}/cli/tiny",
        "--tag",
        "v1",
        "--authfile",
        str(auth),
        "--base-image",
        base,
        "-o",
        "json",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["uri"] == f"oci://{registry}/cli/tiny@{data['digest']}"
    assert data["tag"] == "v1"
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry}/cli/tiny:v1"],
        capture_output=True,
        check=True,
    )
    assert "sha256:" + hashlib.sha256(inspect.stdout).hexdigest() == data["digest"]


def test_unreachable_registry_fails_in_one_line(untrained_model_dir, base):
    from modelgate.modelcar import ModelcarError
    from modelgate.processes import free_port

    with pytest.raises(
        ModelcarError, match=r"pushing the modelcar to 127\.0\.0\.1:\d+/x/y:t failed"
    ):
        build_modelcar(
            str(untrained_model_dir),
            repository=f"127.0.0.1:{free_port()}/x/y",
            base_image=base,
            tag="t",
        )


def test_package_component_pushes_and_records_on_the_version(
    s3_env, untrained_model_dir, registry, base, tmp_path
):
    """The component body as KFP runs it: the mounted auth file, the stored candidate, and its
    registered version, which gets the modelcar as a second artifact."""
    from modelgate.components import given_storage_uri, package_modelcar

    from modelgate.registry.base import MODELCAR_ARTIFACT, RegisterRequest
    from modelgate.registry.kubeflow import KubeflowModelRegistry
    from tests.doubles.model_registry import FakeModelRegistry

    uri = _stored_model(s3_env, untrained_model_dir, tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / ".dockerconfigjson").write_text(json.dumps({"auths": {}}))
    fake = FakeModelRegistry().start()
    try:
        record = KubeflowModelRegistry(fake.url, author="ci").register_version(
            RegisterRequest(model_name="org--tiny", version_name="v1", uri=uri)
        )
        out = package_modelcar.python_func(
            model_uri=uri,
            repository=f"{registry}/pipeline/tiny",
            record=record.to_json(),
            registry_url=fake.url,
            auth_dir=str(secret),
            base_image=base,
        )
        details = json.loads(out.modelcar)
        assert (
            out.storage_uri
            == details["uri"]
            == f"oci://{registry}/pipeline/tiny@{details['digest']}"
        )
        artifacts = {a["name"]: a["uri"] for a in fake.artifacts_of(str(record.model_version_id))}
        assert artifacts == {"org--tiny": uri, MODELCAR_ARTIFACT: out.storage_uri}
    finally:
        fake.stop()
    assert given_storage_uri.python_func(storage_uri="pvc://models/tiny") == "pvc://models/tiny"
