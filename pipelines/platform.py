"""Kubernetes settings of pipeline tasks, from one :class:`~modelgate.placement.Placement`.

How the KFP v2 driver reads each setting decides the parameter types (kubeflow/pipelines
``backend/src/v2/driver``; ``tests/contract`` models it and checks every compiled pipeline):

* accelerator type and count are resolved with ``GetStringValue()`` (``resolve.go``,
  ``resolvePodSpecInputRuntimeParameter``): they must be STRING parameters, or no GPU is
  requested;
* ``tolerationJson`` must resolve to a struct or a list (``k8s.go``, ``extendPodSpecPatch``):
  tolerations are a LIST parameter;
* ``nodeSelectorJson`` is read as a struct (``resolveK8sJsonParameter``): the node selector is a
  STRUCT parameter, or it is silently dropped;
* generic ephemeral volume sizes are constants (no parameter resolution), so the work volume
  size comes from the compile-time placement;
* emptyDir mounts (``k8s.go``, ``EmptyDirMounts``) are constants too: every GPU step gets a
  ``Memory`` emptyDir at ``/dev/shm``, because a container's own is 64 MiB and vLLM's tensor
  parallelism (``accelerator_count`` >= 2) passes NCCL buffers through it;
* a retry policy (``set_retry``) becomes the executor's Argo ``retryStrategy``
  (``v2/compiler/argocompiler/container.go``), whose backoff factor Argo reads as an integer
  (argo-workflows ``workflow/controller/operator.go``, ``intstr.Int32``).

No path is set through environment variables here: kfp.local applies them too, on a machine
without the volume. The library finds the work volume at :data:`~modelgate.placement.WORK_DIR`.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from modelgate.constants import HF_TOKEN_ENV
from modelgate.placement import HEAVY_STEPS, WORK_DIR, Placement, Step
from modelgate.signing import SIGNING_MOUNT, VERIFY_MOUNT

#: Keys of the model store secret mapped to the environment of the steps that read or write it.
STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
#: Shared memory of GPU steps: a ``Memory`` emptyDir at ``/dev/shm`` (what ``docker run
#: --shm-size`` gives vLLM); its pages count against the step's memory limit once written.
SHM_VOLUME, SHM_PATH, SHM_SIZE = "dshm", "/dev/shm", "16Gi"
#: Retries of steps whose side effects are safe to repeat (register, record, promote): the
#: library retries a transient registry failure for about 10 s; these outlast a registry restart
#: (30 s, 60 s, 120 s). The factor is an integer, as Argo reads it.
STEP_RETRIES, STEP_BACKOFF, STEP_BACKOFF_FACTOR, STEP_BACKOFF_MAX = 3, "30s", 2, "10m"


def place(
    task: dsl.PipelineTask,
    step: Step,
    placement: Placement,
    *,
    accelerator_type: dsl.PipelineParameterChannel | None = None,
    accelerator_count: dsl.PipelineParameterChannel | None = None,
    tolerations: dsl.PipelineParameterChannel | None = None,
    node_selector: dsl.PipelineParameterChannel | None = None,
) -> dsl.PipelineTask:
    """Requests/limits and work volume of ``step``; GPUs and scheduling when given."""
    resources = placement.resources(step)
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if step in HEAVY_STEPS and resources.work_volume:
        kubernetes.add_ephemeral_volume(
            task,
            volume_name="work",
            mount_path=WORK_DIR,
            access_modes=["ReadWriteOnce"],
            size=resources.work_volume,
            storage_class_name=placement.work_storage_class,
        )
    if accelerator_type is not None and accelerator_count is not None:
        task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
        kubernetes.empty_dir_mount(
            task, volume_name=SHM_VOLUME, mount_path=SHM_PATH, medium="Memory", size_limit=SHM_SIZE
        )
    if tolerations is not None:
        kubernetes.add_toleration_json(task, tolerations)
    if node_selector is not None:
        kubernetes.add_node_selector_json(task, node_selector)
    return task


def use_store_secret(task: dsl.PipelineTask, secret: dsl.PipelineParameterChannel) -> None:
    """Mount the model store's S3 endpoint and keys as ``AWS_*`` variables (optional keys)."""
    kubernetes.use_secret_as_env(
        task,
        secret_name=secret,
        secret_key_to_env={key: key for key in STORE_SECRET_KEYS},
        optional=True,
    )


def use_hf_token(task: dsl.PipelineTask, secret: dsl.PipelineParameterChannel) -> None:
    """Mount key ``token`` of the Hub token secret as ``HF_TOKEN`` (optional)."""
    kubernetes.use_secret_as_env(
        task, secret_name=secret, secret_key_to_env={"token": HF_TOKEN_ENV}, optional=True
    )


def use_signing_key(task: dsl.PipelineTask, secret: dsl.PipelineParameterChannel) -> None:
    """Mount the signing key Secret where :mod:`modelgate.signing` looks for it (optional:
    without the Secret the step stores its model unsigned, and logs so)."""
    kubernetes.use_secret_as_volume(
        task, secret_name=secret, mount_path=SIGNING_MOUNT, optional=True
    )


def use_verify_key(task: dsl.PipelineTask, secret: dsl.PipelineParameterChannel) -> None:
    """Mount the verify key Secret where :mod:`modelgate.signing` looks for it (optional:
    without the Secret the step logs that signature verification is off)."""
    kubernetes.use_secret_as_volume(
        task, secret_name=secret, mount_path=VERIFY_MOUNT, optional=True
    )


def retry_safely(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Retry a step whose external side effects are safe to repeat (register, record, promote).

    Each of them reads before it writes (the library's registry calls are idempotent), so a
    second attempt after a failed or interrupted one finishes the same change.
    """
    return task.set_retry(
        num_retries=STEP_RETRIES,
        backoff_duration=STEP_BACKOFF,
        backoff_factor=STEP_BACKOFF_FACTOR,
        backoff_max_duration=STEP_BACKOFF_MAX,
    )


def no_cache(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Turn KFP caching off: the step has side effects, or its input names something mutable."""
    return task.set_caching_options(False)
