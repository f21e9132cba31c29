"""The deploy-target interface: a deployment, and the targets that make one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelgate.deploy.spec import DeploySpec
from modelgate.errors import ConfigError

DeployTargetName = Literal["kserve", "llmisvc", "local"]
TARGETS: tuple[DeployTargetName, ...] = ("kserve", "llmisvc", "local")


@dataclass
class Deployment:
    """A running deployment: where to reach it and how to tear it down."""

    target: DeployTargetName
    name: str
    endpoint: str  # base URL of the OpenAI-compatible server, without /v1
    model: str  # served model name for OpenAI requests
    ready_seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # pid / namespace / generation ...


class DeployTarget(Protocol):
    """A place a model can be served. Implementations: KServe, local vLLM process."""

    @property
    def name(self) -> DeployTargetName:
        """The target's name, one of :data:`TARGETS`."""
        ...

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Serve ``spec.storage_uri`` as the *candidate* and wait until it serves.

        Production, when there is one, keeps serving: the candidate runs beside it (a KServe
        canary predictor, a second local server) and :attr:`Deployment.endpoint` reaches the
        candidate only, so the post-deploy gates measure it and nothing else. Without
        production the candidate is the only deployment.
        """
        ...

    def promote(self, deployment: Deployment) -> str:
        """Make the gated candidate production and wait until only it serves.

        Returns:
            One line saying what changed, for the console.
        """
        ...

    def teardown(self, deployment: Deployment) -> None:
        """Remove the deployment (idempotent)."""
        ...

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment`` after a failed check: restore what it replaced, or remove it."""
        ...

    def rollback_run(self, name: str, namespace: str | None, run_id: str) -> str:
        """Undo whatever run ``run_id`` deployed under ``name`` and did not promote.

        The pipeline's rollback step (an exit handler: it runs after a failure, a cancel or a
        success) knows only the run, not the deployment, so this reads the state: a candidate
        stamped with ``run_id`` that is not production is removed and production left serving;
        anything else is left alone. Idempotent.

        Returns:
            One line saying what was undone, or that there was nothing to undo.
        """
        ...


def make_target(
    name: str, *, vllm_python: str | None = None, startup_timeout: float = 600.0
) -> DeployTarget:
    """The deploy target called ``name``.

    Raises:
        ConfigError: Unknown target name.
    """
    if name == "kserve":
        from modelgate.deploy.kserve import KServeTarget

        return KServeTarget(timeout=startup_timeout)
    if name == "llmisvc":
        from modelgate.deploy.llmisvc import LLMInferenceServiceTarget

        return LLMInferenceServiceTarget(timeout=startup_timeout)
    if name == "local":
        from modelgate.deploy.local import LocalVLLMTarget

        return LocalVLLMTarget(python=vllm_python, startup_timeout=startup_timeout)
    raise ConfigError(f"unknown deploy target {name!r}; choose one of {list(TARGETS)}")
