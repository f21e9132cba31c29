"""KFP components of modelgate: thin typed wrappers around the ``modelgate`` library."""

from modelgate.components.deploy.component import deploy_model, rollback_release, smoke_test
from modelgate.components.download.component import download_model
from modelgate.components.evaluate.component import evaluate_model
from modelgate.components.gate.component import check_gate, stop_promotion
from modelgate.components.package.component import given_storage_uri, package_modelcar
from modelgate.components.preflight.component import preflight_redeploy, preflight_release
from modelgate.components.quantize.component import quantize_model
from modelgate.components.register.component import (
    lookup_production,
    promote_candidate,
    record_evaluation,
    register_candidate,
    resolve_version,
)
from modelgate.components.serving_gate.component import serving_gate

__all__ = [
    "check_gate",
    "deploy_model",
    "download_model",
    "evaluate_model",
    "given_storage_uri",
    "lookup_production",
    "package_modelcar",
    "preflight_redeploy",
    "preflight_release",
    "promote_candidate",
    "quantize_model",
    "record_evaluation",
    "register_candidate",
    "resolve_version",
    "rollback_release",
    "serving_gate",
    "smoke_test",
    "stop_promotion",
]
