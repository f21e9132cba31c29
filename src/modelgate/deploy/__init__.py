"""Deploy step: one :class:`DeploySpec`, several :class:`DeployTarget` implementations.

Modules: :mod:`~modelgate.deploy.spec` (what to serve), :mod:`~modelgate.deploy.target` (the
interface), :mod:`~modelgate.deploy.kserve`, :mod:`~modelgate.deploy.llmisvc` and
:mod:`~modelgate.deploy.local` (the targets), :mod:`~modelgate.deploy.kube` (the Kubernetes
plumbing both KServe targets share), :mod:`~modelgate.deploy.crd` (strict CRD validation),
:mod:`~modelgate.deploy.smoke` (the post-deploy check) and :mod:`~modelgate.deploy.plan` (policy
and the step entry points).
Submodules import each other, never this package.
"""

from modelgate.deploy.spec import DeploySpec, vllm_args
from modelgate.deploy.target import Deployment, DeployTarget, make_target

__all__ = ["DeploySpec", "DeployTarget", "Deployment", "make_target", "vllm_args"]
