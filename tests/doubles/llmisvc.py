"""A double of KServe's LLMInferenceService controller for ``FakeCustomObjectsApi``.

:class:`LLMISVCController` plays KServe v0.20.0's ``LLMISVCReconciler`` for the single-node,
router-less objects :mod:`modelgate.deploy.llmisvc` builds, on top of the Kubernetes Deployment
controller that :class:`tests.doubles.kube.KServeController` simulates (its ``_sync_deployment``:
rolling updates with surge, ``Available``/``Progressing`` conditions, ``ProgressDeadlineExceeded``,
the scripted ``failures``). What it takes from the controller (kserve/kserve v0.20.0,
``pkg/controller/v1alpha2/llmisvc/`` unless another path is named):

* ``controller.go`` ``Reconcile``: knative.dev/pkg ``reconciler.PreProcessReconcile`` marks
  ``Ready`` Unknown (``NewObservedGenFailure``) when ``status.observedGeneration`` lags, and
  ``PostProcessReconcile`` sets ``observedGeneration`` to the generation after every reconcile,
  whether it succeeded or not.
* ``config_merge.go`` ``reconcileBaseRefs``: ``PresetsCombined`` True, or False with
  ``ConfigNotFound`` when the well-known ``kserve-config-llm-template`` is missing
  (``config_missing=True``); then the reconcile stops there and the other conditions keep
  their previous values.
* ``workload_single_node.go`` ``expectedSingleNodeMainDeployment``: the main Deployment
  ``<name>-kserve`` with the merged pod template; ``spec.annotations`` and ``spec.labels`` go
  onto the pod template; ``spec.replicas`` when set, else the current count
  (``PreserveDeploymentReplicas``). The template merges the object's ``spec.template`` over the
  well-known config's ``main`` container (``mergeSpecs``: strategic merge, containers by name;
  the vLLM invocation here is a summary of ``config/llmisvcconfig/config-llm-template.yaml``).
* ``workload_storage.go`` ``attachModelArtifacts``: ``hf://``/``s3://`` get the
  storage-initializer init container, ``pvc://`` a volume, ``oci://`` a modelcar; any other
  scheme fails the reconcile (``MainWorkloadReady=False ReconcileSingleNodeWorkloadError``).
* ``propagateDeploymentStatus``: ``MainWorkloadReady`` walks the Deployment's conditions in
  order: ``Progressing=False`` marks it not ready; ``Available`` decides and ends the walk; no
  ``Available`` at all: not ready, reason ``Progressing``. So it is True while old pods serve.
* ``llm_inference_service_lifecycle.go``: ``WorkloadsReady`` from ``MainWorkloadReady``,
  ``RouterReady`` True (no router sub-conditions without ``spec.router``), ``Ready`` from both
  (a knative ``LivingConditionSet``: the first False dependent's reason and message).
* ``router.go`` ``updateRoutingStatus`` without ``spec.router``: ``status.addresses`` is the
  workload Service ``http://<name>-kserve-workload-svc.<ns>.svc.cluster.local`` (``https`` with
  ``tls=True``), without a port, from the first reconcile on; ``status.url`` stays unset.
* ``workload_status.go`` ``observeWorkloadStatus``: ``status.workloads`` names the Deployment
  (with its ``availableReplicas`` as ``readyReplicas``) and the Service.

Not simulated: routers, schedulers, LoRA, multi-node and prefill workloads, finalizers and the
garbage collection of the Deployment after a delete.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tests.doubles.kube import (
    FakeAppsV1Api,
    FakeCustomObjectsApi,
    KServeController,
    RolloutSnapshot,
    _time,
    condition,
)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1alpha2", "llminferenceservices"
#: The well-known template's image (``config-llm-template.yaml``).
TEMPLATE_IMAGE = "ghcr.io/llm-d/llm-d-cuda:v0.8.0"
STORAGE_INITIALIZER = "storage-initializer"
SUPPORTED_SCHEMES = ("hf", "s3", "pvc", "oci")
#: Conditions of the Ready rollup (llmInferenceServiceCondSet); the rest have severity Info.
_DEPENDENTS = ("WorkloadsReady", "RouterReady")


def workload(name: str) -> str:
    """The main Deployment's name (``mainDeploymentName`` for names that fit)."""
    return f"{name}-kserve"


def workload_service(name: str) -> str:
    """The workload Service's name (``workloadServiceName``)."""
    return f"{name}-kserve-workload-svc"


def template_command(obj: Mapping[str, Any]) -> list[str]:
    """The well-known template's vLLM invocation for ``obj``, rendered (a summary)."""
    spec, meta = obj["spec"], obj["metadata"]
    model = (spec.get("model") or {}).get("name") or meta["name"]
    line = (
        f"exec vllm serve /mnt/models --served-model-name {model} "
        f"publishers/{meta['namespace']}/models/{model} --port 8000"
    )
    tensor = (spec.get("parallelism") or {}).get("tensor")
    if tensor:
        line += f" --tensor-parallel-size {tensor}"
    return ["/bin/bash", "-c", line + ' "$@"', "--"]


def _merge_container(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


class LLMISVCController(KServeController):
    """KServe's LLMInferenceService reconciler plus the Deployment controller (module docstring).

    Called on every ``get`` of an LLMInferenceService (one poll = one step): the Deployment
    controller acts on the main Deployment, then the reconciler writes the Deployment and the
    status (``status_lags``: the other way round, so the status a client reads is one step late).

    Args:
        apps: The :class:`FakeAppsV1Api` holding the Deployments.
        config_missing: The well-known ``kserve-config-llm-template`` is not installed.
        tls: ``enableLLMInferenceServiceTLS``: the published address is ``https``.
        **options: :class:`KServeController`'s (``ready_after``, ``replicas``, ``failures``
            keyed by rollout stamp, ``deadline_after``, ``reconcile_delay``, ``status_lags``).
    """

    def __init__(
        self,
        apps: FakeAppsV1Api,
        *,
        config_missing: bool = False,
        tls: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(apps, **options)
        self.config_missing = config_missing
        self.tls = tls

    # -- scripting helpers ----------------------------------------------------------------------

    def replica_set(self, namespace: str, name: str, stamp: str | None) -> Any:
        for rs in self.replica_sets.get((namespace, workload(name)), {}).values():
            if rs.stamp == stamp:
                return rs
        return None

    def run(self, api: FakeCustomObjectsApi, namespace: str, name: str, polls: int) -> None:
        for _ in range(polls):
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    # -- one step -------------------------------------------------------------------------------

    def __call__(self, api: FakeCustomObjectsApi, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        reconciles = self._step(namespace, name, meta["generation"])
        dep = self.apps.stored(namespace, workload(name))

        def reconcile(dep: dict[str, Any] | None) -> dict[str, Any] | None:
            if not reconciles:
                return dep
            error = None
            if not self.config_missing:
                uri = ((obj["spec"].get("model") or {}).get("uri")) or ""
                scheme = uri.split("://", 1)[0] if "://" in uri else ""
                if scheme in SUPPORTED_SCHEMES:
                    dep = self._reconcile_deployment(obj, dep)
                else:
                    error = f"unsupported schema in model URI: {uri}"
            api.set_status(GROUP, VERSION, namespace, PLURAL, name, self._status(obj, dep, error))
            return dep

        if self.status_lags:
            dep = reconcile(dep)
        if dep is not None:
            self._sync_deployment(dep)
        if not self.status_lags:
            reconcile(dep)
        self.history.append(self._snapshot(api, namespace, name))

    # -- the workload ---------------------------------------------------------------------------

    def _pod_template(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta, spec = obj["metadata"], obj["spec"]
        pod = copy.deepcopy(spec.get("template") or {})
        main = {
            "name": "main",
            "image": TEMPLATE_IMAGE,
            "command": template_command(obj),
            "ports": [{"containerPort": 8000, "protocol": "TCP"}],
            "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
        }
        containers = pod.get("containers") or []
        mine = next((c for c in containers if c.get("name") == "main"), {})
        pod["containers"] = [_merge_container(main, mine)] + [
            c for c in containers if c.get("name") != "main"
        ]
        uri = spec["model"]["uri"]
        scheme = uri.split("://", 1)[0]
        if scheme in ("hf", "s3"):
            pod["initContainers"] = [
                {"name": STORAGE_INITIALIZER, "args": [uri, "/mnt/models"]},
                *(pod.get("initContainers") or []),
            ]
        elif scheme == "pvc":
            claim = uri.split("://", 1)[1].split("/", 1)[0]
            pod["volumes"] = [{"name": "model-pvc", "persistentVolumeClaim": {"claimName": claim}}]
        labels = {
            "app.kubernetes.io/component": "llminferenceservice-workload",
            "app.kubernetes.io/name": meta["name"],
            "app.kubernetes.io/part-of": "llminferenceservice",
            "kserve.io/component": "workload",
            "llm-d.ai/role": "both",
            **(spec.get("labels") or {}),
        }
        annotations = {
            "serving.kserve.io/model-based-routing-enabled": "true",  # the template's
            **(spec.get("annotations") or {}),
        }
        return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}

    def _reconcile_deployment(
        self, obj: Mapping[str, Any], dep: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], workload(meta["name"])
        template = self._pod_template(obj)
        replicas = obj["spec"].get("replicas")
        if dep is None:
            dep = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "generation": 1,
                    "labels": dict(template["metadata"]["labels"]),
                    "ownerReferences": [
                        {
                            "apiVersion": obj["apiVersion"],
                            "kind": "LLMInferenceService",
                            "name": meta["name"],
                            "uid": meta.get("uid", ""),
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": self.replicas if replicas is None else replicas,
                    "selector": {"matchLabels": dict(template["metadata"]["labels"])},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "progressDeadlineSeconds": 600,
                    "template": template,
                },
                "status": {},
            }
            self.apps.put(dep)
        else:
            desired = dep["spec"]["replicas"] if replicas is None else replicas
            if dep["spec"]["template"] != template or dep["spec"]["replicas"] != desired:
                dep["spec"]["template"] = template
                dep["spec"]["replicas"] = desired
                dep["metadata"]["generation"] += 1
                self.apps.put(dep)
        stored = self.apps.stored(namespace, name)
        assert stored is not None
        return stored

    # -- the status -----------------------------------------------------------------------------

    def _status(
        self, obj: Mapping[str, Any], dep: Mapping[str, Any] | None, error: str | None
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous = copy.deepcopy(dict(obj.get("status") or {}))
        before = {c["type"]: c for c in previous.get("conditions") or []}
        now = {
            t: (c["status"], c.get("reason", ""), c.get("message", "")) for t, c in before.items()
        }
        if previous.get("observedGeneration") != meta["generation"]:  # PreProcessReconcile
            now["Ready"] = (
                "Unknown",
                "NewObservedGenFailure",
                "unsucessfully observed a new generation",
            )

        if self.config_missing:
            message = 'LLMInferenceServiceConfig "kserve-config-llm-template" not found'
            now["PresetsCombined"] = ("False", "ConfigNotFound", message)
        else:
            now["PresetsCombined"] = ("True", "", "")
            if error:
                now["MainWorkloadReady"] = ("False", "ReconcileSingleNodeWorkloadError", error)
            else:
                now["MainWorkloadReady"] = self._main_workload(dep)
            main = now["MainWorkloadReady"]  # DetermineWorkloadReadiness
            now["WorkloadsReady"] = main if main[0] == "False" else ("True", "", "")
            if not error:  # the router runs after the workload reconciled
                now["RouterReady"] = ("True", "", "")
            dependents = [now.get(t, ("Unknown", "", "")) for t in _DEPENDENTS]
            failed = next((d for d in dependents if d[0] == "False"), None)
            if failed:
                now["Ready"] = failed
            elif all(d[0] == "True" for d in dependents):
                now["Ready"] = ("True", "", "")

        def cond(ctype: str, value: tuple[str, str, str]) -> dict[str, str]:
            out = condition(ctype, *value)
            old = before.get(ctype)
            same = old is not None and old["status"] == value[0]
            out["lastTransitionTime"] = old["lastTransitionTime"] if same else _time(self.tick)
            if ctype not in (*_DEPENDENTS, "Ready"):
                out["severity"] = "Info"
            return out

        status = previous
        status["conditions"] = [cond(t, now[t]) for t in sorted(now)]
        status["observedGeneration"] = meta["generation"]  # PostProcessReconcile
        if not self.config_missing and not error:
            scheme = "https" if self.tls else "http"
            host = f"{workload_service(name)}.{namespace}.svc.cluster.local"
            status["addresses"] = [{"url": f"{scheme}://{host}"}]
            available = ((dep or {}).get("status") or {}).get("availableReplicas", 0)
            status["workloads"] = {
                "primary": {
                    "apiGroup": "apps",
                    "kind": "Deployment",
                    "name": workload(name),
                    "readyReplicas": available,
                },
                "service": {"kind": "Service", "name": workload_service(name)},
            }
        return status

    @staticmethod
    def _main_workload(dep: Mapping[str, Any] | None) -> tuple[str, str, str]:
        """``propagateDeploymentStatus``: the Deployment's conditions, walked in order."""
        result: tuple[str, str, str] | None = None
        for c in ((dep or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == "Progressing" and c["status"] == "False":
                result = ("False", c.get("reason", ""), c.get("message", ""))
            if c["type"] == "Available":
                if c["status"] == "True":
                    return ("True", "", "")
                return ("False", c.get("reason", ""), c.get("message", ""))
        return result or ("False", "Progressing", "")

    def _snapshot(self, api: FakeCustomObjectsApi, namespace: str, name: str) -> RolloutSnapshot:
        status = (api.stored(namespace, name, PLURAL) or {}).get("status") or {}
        return self.deployment_snapshot(namespace, workload(name), status)


def llmisvc_cluster(
    **controller_options: Any,
) -> tuple[FakeCustomObjectsApi, FakeAppsV1Api, LLMISVCController]:
    """An API server double with an :class:`LLMISVCController`: ``(api, apps, controller)``."""
    apps = FakeAppsV1Api()
    controller = LLMISVCController(apps, **controller_options)
    return FakeCustomObjectsApi(controller), apps, controller
