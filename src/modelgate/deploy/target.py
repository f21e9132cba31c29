"""The deploy-target interface: a deployment, and the targets that make one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelgate.deploy.spec import DeploySpec
from modelgate.errors import ConfigError

DeployTargetName = Literal["kserve", "local"]
TARGETS: tuple[DeployTargetName, ...] = ("kserve", "local")


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
        """Create or update the deployment of ``spec.storage_uri`` and wait until it serves."""
        ...

    def teardown(self, deployment: Deployment) -> None:
        """Remove the deployment (idempotent)."""
        ...

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment`` after a failed check: restore what it replaced, or remove it."""
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
    if name == "local":
        from modelgate.deploy.local import LocalVLLMTarget

        return LocalVLLMTarget(python=vllm_python, startup_timeout=startup_timeout)
    raise ConfigError(f"unknown deploy target {name!r}; choose one of {list(TARGETS)}")
