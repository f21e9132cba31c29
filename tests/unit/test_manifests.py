"""manifests/: kustomize builds, CRD-valid resources, and runtime args consistent with vllm_args."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelgate import kserve
from modelgate.deploy import DeploySpec, vllm_args

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "manifests" / "base"
MONITORING = REPO / "manifests" / "monitoring"

CRDS = {
    "ServingRuntime": (kserve.SERVING_RUNTIME_CRD_FILE, "v1alpha1"),
    "ClusterStorageContainer": (kserve.CLUSTER_STORAGE_CONTAINER_CRD_FILE, "v1alpha1"),
}


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (needed for 'kubectl kustomize')")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(BASE)


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _runtime_container(runtime: dict) -> dict:
    return next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")


def test_base_emits_expected_resources(base):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    assert kinds == [
        ("ClusterStorageContainer", "model-registry-storage-initializer"),
        ("PersistentVolumeClaim", "modelgate-models"),
        ("Role", "modelgate-deployer"),
        ("RoleBinding", "modelgate-deployer"),
        ("ServiceAccount", "modelgate-pipeline"),
        ("ServingRuntime", "vllm-runtime"),
    ]
    for doc in base:
        assert "namespace" not in doc["metadata"], "base is applied with -n <namespace>"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_kserve_resources_match_strict_crds(base, kind):
    docs = [d for d in base if d["kind"] == kind]
    assert docs, f"no {kind} emitted"
    crd_file, version = CRDS[kind]
    for doc in docs:
        assert doc["apiVersion"] == f"serving.kserve.io/{version}"
        assert kserve.crd_validation_errors(doc, crd_file, version) == [], doc["metadata"]["name"]


@pytest.mark.parametrize(
    "kind, mutate, expected",
    [
        (
            "ServingRuntime",
            lambda d: _runtime_container(d).update(arg=["x"]),
            "'arg' was unexpected",
        ),
        (
            "ServingRuntime",
            lambda d: d["spec"]["supportedModelFormats"][0].update(autoselect=True),
            "autoselect",
        ),
        (
            "ClusterStorageContainer",
            lambda d: d["spec"]["supportedUriFormats"][0].update(prefx="x://"),
            "prefx",
        ),
    ],
)
def test_strict_crds_catch_typos(base, kind, mutate, expected):
    doc = copy.deepcopy(_one(base, kind))
    mutate(doc)
    crd_file, version = CRDS[kind]
    errors = kserve.crd_validation_errors(doc, crd_file, version)
    assert any(expected in e for e in errors), errors


def test_runtime_matches_deploy_defaults(base):
    runtime = _one(base, "ServingRuntime", kserve.RUNTIME_NAME)
    defaults = DeploySpec(name="x", storage_uri="s3://b/m")
    assert runtime["metadata"]["name"] == defaults.runtime
    formats = runtime["spec"]["supportedModelFormats"]
    assert any(f["name"] == defaults.model_format and f.get("autoSelect") for f in formats)
    container = _runtime_container(runtime)
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["args"] == kserve.runtime_args()


@pytest.mark.parametrize(
    "spec",
    [
        DeploySpec(name="plain", storage_uri="s3://b/m"),
        DeploySpec(
            name="full",
            storage_uri="s3://b/m",
            max_model_len=8192,
            dtype="float16",
            extra_args=["--enable-prefix-caching", "--max-num-seqs=64"],
        ),
        DeploySpec(name="cpu", storage_uri="pvc://p/m", accelerator_count=0),
    ],
    ids=lambda s: s.name,
)
def test_runtime_args_plus_isvc_args_equal_vllm_args(base, spec):
    """What vLLM receives in the cluster (runtime args rendered + appended ISVC args)."""
    container = _runtime_container(_one(base, "ServingRuntime", kserve.RUNTIME_NAME))
    isvc = kserve.build_inference_service(spec)
    rendered = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
    merged = rendered + isvc["spec"]["predictor"]["model"]["args"]
    assert merged == vllm_args(spec, model_path="/mnt/models", port=8080)


def test_runtime_image_is_pinned_to_the_local_vllm(base):
    image = _runtime_container(_one(base, "ServingRuntime"))["image"]
    repo, _, tag = image.rpartition(":")
    assert repo == "vllm/vllm-openai" and tag and tag != "latest", image
    pins = REPO / "requirements" / "vllm.txt"
    if pins.is_file():
        match = re.search(r"^vllm(?:-cpu)?==([\w.]+)", pins.read_text(), re.MULTILINE)
        if match:
            assert tag == f"v{match.group(1)}", f"{image} vs requirements/vllm.txt {match.group(0)}"


def test_runtime_metrics_and_probes(base):
    runtime = _one(base, "ServingRuntime")
    assert runtime["spec"]["annotations"] == {
        "prometheus.kserve.io/port": "8080",
        "prometheus.kserve.io/path": "/metrics",
    }
    container = _runtime_container(runtime)
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8080}
    assert {"containerPort": 8080, "name": "http1", "protocol": "TCP"} in container["ports"]


def test_storage_container_defaults(base):
    csc = _one(base, "ClusterStorageContainer")
    container = csc["spec"]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (
        env["MODEL_REGISTRY_BASE_URL"] == "model-registry-service.kubeflow.svc.cluster.local:8080"
    )
    assert not container["image"].endswith(":latest") and ":" in container["image"]
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": "model-registry://"}]
    pvc = _one(base, "PersistentVolumeClaim", "modelgate-models")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_overlay_knobs_documented_in_base_work(tmp_path):
    """The overlay recipe from manifests/base/kustomization.yaml: registry URL and vLLM tag."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BASE, overlay)],  # kustomize: no absolute roots
                "images": [{"name": "vllm/vllm-openai", "newTag": "v0.0.1"}],
                "patches": [
                    {
                        "target": {
                            "kind": "ClusterStorageContainer",
                            "name": "model-registry-storage-initializer",
                        },
                        "patch": yaml.safe_dump(
                            [
                                {
                                    "op": "replace",
                                    "path": "/spec/container/env/0/value",
                                    "value": "mr.team-a.svc:8080",
                                }
                            ]
                        ),
                    }
                ],
            }
        )
    )
    docs = kustomize(overlay)
    env = _one(docs, "ClusterStorageContainer")["spec"]["container"]["env"]
    assert env == [{"name": "MODEL_REGISTRY_BASE_URL", "value": "mr.team-a.svc:8080"}]
    assert _runtime_container(_one(docs, "ServingRuntime"))["image"] == "vllm/vllm-openai:v0.0.1"


def test_rbac_allows_what_kserve_target_does(base):
    role = _one(base, "Role", "modelgate-deployer")

    def verbs(group: str, resource: str) -> set[str]:
        out: set[str] = set()
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"]:
                out |= set(rule["verbs"])
        return out

    assert {"get", "list", "watch", "create", "patch", "update", "delete"} <= verbs(
        "serving.kserve.io", "inferenceservices"
    )
    assert {"get", "list"} <= verbs("serving.kserve.io", "servingruntimes")
    assert {"get", "list", "watch"} <= verbs("", "events")
    binding = _one(base, "RoleBinding", "modelgate-deployer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "modelgate-deployer",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelgate-pipeline"}]
    assert "manifests/base/rbac.yaml" in kserve.RBAC_HINT
    assert (BASE / "rbac.yaml").is_file()


def test_monitoring_scrapes_modelgate_predictors(base):
    docs = kustomize(MONITORING)
    monitor = _one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    labels = kserve.build_inference_service(DeploySpec(name="x", storage_uri="s3://b/m"))[
        "metadata"
    ]["labels"]
    assert selector.items() <= labels.items()
    ports = {p["name"] for p in _runtime_container(_one(base, "ServingRuntime"))["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
