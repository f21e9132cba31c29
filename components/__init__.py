"""KFP components of modelgate: thin typed wrappers around the ``modelgate`` library."""

from components.deploy.component import deploy_model, smoke_test
from components.download.component import download_model
from components.evaluate.component import evaluate_model
from components.gate.component import check_gate, stop_promotion
from components.preflight.component import preflight_redeploy, preflight_release
from components.quantize.component import quantize_model
from components.register.component import (
    lookup_production,
    promote_candidate,
    record_evaluation,
    register_candidate,
    resolve_version,
)

__all__ = [
    "check_gate",
    "deploy_model",
    "download_model",
    "evaluate_model",
    "lookup_production",
    "preflight_redeploy",
    "preflight_release",
    "promote_candidate",
    "quantize_model",
    "record_evaluation",
    "register_candidate",
    "resolve_version",
    "smoke_test",
    "stop_promotion",
]
