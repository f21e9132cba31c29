"""The KServe CRD schemas packaged in modelgate.resources/crds, and the script that vendors them.

Validation reads only package data: these tests run without the ``shared/schemas`` folder beside
the repository. Where that folder exists, the packaged copy is also checked against what
``scripts/vendor_crd_schemas.py`` derives from it.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from modelgate.deploy import DeploySpec, crd, kserve
from modelgate.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
SCRIPT = REPO / "scripts" / "vendor_crd_schemas.py"
NO_SHARED = (
    "../shared/schemas is not beside this checkout; the packaged copy is checked only where it is"
)
needs_shared = pytest.mark.skipif(not SHARED_SCHEMAS.is_dir(), reason=NO_SHARED)

PACKAGED = [
    ("clusterservingruntimes.serving.kserve.io", "v1alpha1"),
    ("clusterstoragecontainers.serving.kserve.io", "v1alpha1"),
    ("inferenceservices.serving.kserve.io", "v1beta1"),
    ("llminferenceservices.serving.kserve.io", "v1alpha2"),
    ("servingruntimes.serving.kserve.io", "v1alpha1"),
]


def _isvc() -> dict:
    return kserve.build_inference_service(
        DeploySpec(name="tiny", namespace="ns", storage_uri="s3://bucket/tiny")
    )


def _llm_isvc() -> dict:
    return {
        "apiVersion": crd.LLM_API_VERSION,
        "kind": crd.LLM_KIND,
        "metadata": {"name": "tiny-llm", "namespace": "ns"},
        "spec": {"model": {"uri": "hf://org/tiny", "name": "tiny"}, "replicas": 1},
    }


def _serving_runtime() -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "rt"},
        "spec": {
            "supportedModelFormats": [{"name": "vLLM", "autoSelect": True}],
            "containers": [{"name": "kserve-container", "image": "vllm:x", "args": ["--a"]}],
        },
    }


@pytest.fixture(scope="module")
def vendor() -> ModuleType:
    """scripts/vendor_crd_schemas.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("vendor_crd_schemas", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# The packaged schemas at run time
# --------------------------------------------------------------------------------------------


def test_packaged_schemas_are_the_expected_set():
    assert crd.packaged_schemas() == PACKAGED
    for kind_crd in crd.CRD_BY_KIND.values():
        assert any(c == kind_crd for c, _ in PACKAGED), kind_crd


def test_packaged_size_stays_small():
    folder = resources.files("modelgate.resources") / "crds"
    size = sum(len(entry.read_bytes()) for entry in folder.iterdir() if entry.is_file())
    assert size < 1_500_000


def test_packaged_isvc_schema_accepts_good_and_rejects_typo_strictly():
    isvc = _isvc()
    crd.validate_inference_service(isvc)
    crd.validate_object(isvc)
    assert crd.crd_validation_errors(isvc, crd.ISVC_CRD_FILE, crd.VERSION) == []

    model = isvc["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    with pytest.raises(ConfigError, match=r"spec\.predictor\.model: .*'storageURI' was unexpected"):
        crd.validate_inference_service(isvc)


def test_isvc_serving_a_modelcar_by_digest_validates():
    # what deploy emits when the package step built a modelcar (modelgate.modelcar)
    uri = "oci://quay.io/org/tiny@sha256:" + "0f" * 32
    isvc = kserve.build_inference_service(DeploySpec(name="tiny", namespace="ns", storage_uri=uri))
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == uri
    crd.validate_inference_service(isvc)
    assert crd.crd_validation_errors(isvc, crd.ISVC_CRD_FILE, crd.VERSION) == []


def test_llm_inference_service_v1alpha2():
    good = _llm_isvc()
    crd.validate_llm_inference_service(good)
    crd.validate_object(good)

    typo = copy.deepcopy(good)
    typo["spec"]["model"]["uir"] = typo["spec"]["model"].pop("uri")
    with pytest.raises(ConfigError) as info:
        crd.validate_llm_inference_service(typo)
    message = str(info.value)
    assert "LLMInferenceService 'tiny-llm'" in message
    assert "'uir' was unexpected" in message and "'uri' is a required property" in message

    older = {**good, "apiVersion": "serving.kserve.io/v1alpha1"}
    with pytest.raises(ConfigError, match="expected apiVersion serving.kserve.io/v1alpha2"):
        crd.validate_llm_inference_service(older)
    with pytest.raises(ConfigError, match="expected apiVersion serving.kserve.io/v1alpha2"):
        crd.validate_llm_inference_service(_isvc())


def test_validate_object_picks_the_schema_from_api_version_and_kind():
    runtime = _serving_runtime()
    crd.validate_object(runtime)
    runtime["spec"]["containers"][0]["arg"] = ["x"]
    runtime["spec"]["supportedModelFormats"][0]["autoselect"] = True
    with pytest.raises(ConfigError) as info:
        crd.validate_object(runtime)
    message = str(info.value)
    assert "ServingRuntime 'rt'" in message and "servingruntimes.serving.kserve.io" in message
    assert "'arg' was unexpected" in message and "'autoselect' was unexpected" in message

    cluster = {**_serving_runtime(), "kind": "ClusterServingRuntime"}
    crd.validate_object(cluster)


@pytest.mark.parametrize(
    "api_version, kind, match",
    [
        ("apps/v1", "Deployment", "no packaged CRD schema for apiVersion 'apps/v1'"),
        ("serving.kserve.io/v1beta1", "InferenceGraph", "kind 'InferenceGraph'"),
        ("v1", "ConfigMap", "no packaged CRD schema"),
        (None, None, "no packaged CRD schema"),
        ("serving.kserve.io/v1", "InferenceService", "has no version 'v1' packaged"),
        ("serving.kserve.io/v1alpha1", "LLMInferenceService", "it has v1alpha2"),
    ],
)
def test_validate_object_refuses_kinds_without_a_schema(api_version, kind, match):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(ConfigError, match=match):
        crd.validate_object(obj)


def test_load_crd_schema_by_crd_name_or_kind():
    by_name = crd.load_crd_schema(crd.CLUSTER_STORAGE_CONTAINER_CRD_FILE, "v1alpha1")
    assert crd.load_crd_schema("ClusterStorageContainer", "v1alpha1") is by_name
    assert by_name["type"] == "object" and "spec" in by_name["properties"]
    with pytest.raises(ConfigError, match="known kinds"):
        crd.load_crd_schema("Deployment", "v1")
    with pytest.raises(ConfigError, match="no packaged schema for CRD 'foos.example.com'"):
        crd.load_crd_schema("foos.example.com", "v1")


def test_crd_module_reads_nothing_beside_the_package():
    source = inspect.getsource(crd)
    for needle in ("shared", "SCHEMAS_DIR", "__file__", "os.environ", "getenv"):
        assert needle not in source, needle
    assert not hasattr(crd, "schemas_dir")
    assert not hasattr(crd, "SCHEMAS_DIR_ENV")


def test_import_and_validate_from_an_empty_directory(tmp_path):
    """A fresh interpreter in an empty folder validates, opening nothing under ../shared."""
    work = tmp_path / "empty"
    work.mkdir()
    program = textwrap.dedent(
        f"""
        import sys

        SHARED = {str(SHARED_SCHEMAS)!r}

        def refuse_shared(event, args):
            if event == "open" and isinstance(args[0], str) and args[0].startswith(SHARED):
                raise RuntimeError(f"opened {{args[0]}}")

        sys.addaudithook(refuse_shared)

        from modelgate.deploy import DeploySpec, crd, kserve
        from modelgate.errors import ConfigError

        isvc = kserve.build_inference_service(DeploySpec(name="m", storage_uri="s3://b/m"))
        crd.validate_inference_service(isvc)
        isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://b/m"
        try:
            crd.validate_inference_service(isvc)
        except ConfigError as exc:
            assert "storageURI" in str(exc), exc
        else:
            raise SystemExit("typo accepted")
        crd.validate_llm_inference_service({_llm_isvc()!r})
        print("ok")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert list(work.iterdir()) == []


# --------------------------------------------------------------------------------------------
# scripts/vendor_crd_schemas.py
# --------------------------------------------------------------------------------------------


def test_strip_descriptions_removes_only_the_keyword(vendor):
    schema = {
        "description": "top",
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "a field called description"},
            "items": {
                "type": "array",
                "items": {"type": "object", "description": "x", "properties": {}},
            },
            "choice": {"anyOf": [{"type": "integer", "description": "i"}, {"type": "string"}]},
            "map": {"type": "object", "additionalProperties": {"description": "v"}},
            "literal": {
                "type": "object",
                "default": {"description": "kept: a value"},
                "enum": [{"description": "kept"}],
                "x-kubernetes-validations": [{"rule": "true", "message": "m"}],
            },
        },
        "required": ["description"],
    }
    original = copy.deepcopy(schema)
    stripped, removed = vendor.strip_descriptions(schema)
    assert schema == original
    assert removed == 5
    assert stripped == {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {}}},
            "choice": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "map": {"type": "object", "additionalProperties": {}},
            "literal": original["properties"]["literal"],
        },
        "required": ["description"],
    }
    assert vendor.to_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}\n'


def _fake_source(root: Path, vendor: ModuleType) -> Path:
    """A shared/schemas-like folder with a tiny CRD for every file the script reads."""
    folder = root / vendor.SOURCE_FOLDER
    folder.mkdir(parents=True)
    for source in vendor.CRDS:
        plural = source.file.removeprefix("serving.kserve.io_").removesuffix(".yaml")
        schema = {
            "type": "object",
            "description": "d",
            "properties": {"spec": {"type": "object", "description": "s"}},
        }
        doc = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "spec": {
                "group": "serving.kserve.io",
                "names": {"plural": plural, "kind": plural.title()},
                "versions": [
                    {"name": "v0", "schema": {"openAPIV3Schema": {}}},
                    {"name": source.version, "schema": {"openAPIV3Schema": schema}},
                ],
            },
        }
        (folder / source.file).write_text(yaml.safe_dump(doc))
    return root


def test_vendor_script_writes_and_checks(tmp_path, vendor, capsys):
    source = _fake_source(tmp_path / "schemas", vendor)
    dest = tmp_path / "crds"
    args = ["--source", str(source), "--dest", str(dest)]
    assert vendor.main([*args, "--check"]) == 1  # nothing written yet

    assert vendor.main(args) == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(
        [f"{c.rsplit('.', 3)[0]}.serving.kserve.io_{v}.json" for c, v in PACKAGED]
        + ["PROVENANCE.md"]
    )
    isvc = dest / "inferenceservices.serving.kserve.io_v1beta1.json"
    assert isvc.read_text() == '{"properties":{"spec":{"type":"object"}},"type":"object"}\n'
    provenance = (dest / "PROVENANCE.md").read_text()
    for needle in (
        "tag `v0.20.0`",
        "1fb781055dd1567164358233e1125142ca6ef1fe",
        "Apache-2.0",
        "The KServe Authors",
        "kserve-v0.20.0/serving.kserve.io_llminferenceservices.yaml",
        "scripts/vendor_crd_schemas.py --check",
    ):
        assert needle in provenance, needle
    assert vendor.main([*args, "--check"]) == 0

    isvc.write_text("{}\n")
    (dest / "stale.serving.kserve.io_v1.json").write_text("{}\n")
    capsys.readouterr()
    assert vendor.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "differs: inferenceservices.serving.kserve.io_v1beta1.json" in err
    assert "not generated (stale): stale.serving.kserve.io_v1.json" in err

    assert vendor.main(args) == 0  # rewrites, and removes the stale schema
    assert vendor.main([*args, "--check"]) == 0
    assert not (dest / "stale.serving.kserve.io_v1.json").exists()


def test_vendor_script_refuses_a_missing_version(tmp_path, vendor, capsys):
    source = _fake_source(tmp_path / "schemas", vendor)
    path = source / vendor.SOURCE_FOLDER / vendor.CRDS[0].file
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["versions"] = doc["spec"]["versions"][:1]
    path.write_text(yaml.safe_dump(doc))
    assert vendor.main(["--source", str(source), "--dest", str(tmp_path / "crds")]) == 2
    assert "has no version 'v1beta1'" in capsys.readouterr().err
    assert not (tmp_path / "crds").exists()


@needs_shared
def test_packaged_schemas_equal_what_the_script_derives_from_shared(vendor):
    expected = vendor.render(SHARED_SCHEMAS)
    folder = resources.files("modelgate.resources") / "crds"
    packaged = {e.name: e.read_text(encoding="utf-8") for e in folder.iterdir() if e.is_file()}
    assert sorted(packaged) == sorted(expected)
    for name, text in expected.items():
        assert packaged[name] == text, name
    for source in vendor.CRDS:
        vendored = vendor.vendor_one(SHARED_SCHEMAS, source)
        crd_name = vendored.name.removesuffix(f"_{source.version}.json")
        assert crd.CRD_BY_KIND[(crd.GROUP, vendored.kind)] == crd_name
        assert crd.load_crd_schema(crd_name, source.version) == json.loads(vendored.text)


@needs_shared
def test_vendor_script_check_passes_against_shared():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--source", str(SHARED_SCHEMAS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
