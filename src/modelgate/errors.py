"""Error hierarchy for modelgate.

User errors (:class:`ConfigError` and friends) say what was expected and how to fix it.
Infrastructure errors keep their cause (``raise ... from e``).
"""

from __future__ import annotations


class ModelgateError(Exception):
    """Base class of every error raised by modelgate."""


class ConfigError(ModelgateError, ValueError):
    """Bad user input: the message names the expected value and the fix."""


class DownloadError(ModelgateError):
    """The model could not be fetched from the hub or mirror."""


class StorageError(ModelgateError):
    """The model store (S3 prefix or local folder) could not be read or written."""


class UnsafeWeightsError(ConfigError):
    """The repository only ships pickle weights and ``allow_pickle`` was not set."""


class SignatureError(ModelgateError):
    """A stored model is unsigned, signed by another key or identity, or changed since it was
    signed (the message names what did not verify); or signing it failed."""


class QuantizationError(ModelgateError):
    """llm-compressor failed to quantize the model."""


class RegistryError(ModelgateError):
    """The model registry rejected a request or could not be reached."""


class RegistryAPIVersionError(RegistryError):
    """Client and server speak different Model Registry REST API versions."""


class EvaluationError(ModelgateError):
    """lm-eval failed or returned no usable results."""


class GateFailedError(ModelgateError):
    """A quality gate did not pass; promotion must stop."""


class DeployError(ModelgateError):
    """Deploying or serving the model failed."""


class DeployTimeoutError(DeployError, TimeoutError):
    """The deployment did not become ready within the timeout."""


class SmokeTestError(DeployError):
    """The served model did not answer the smoke test with text."""


class SubmitError(ModelgateError):
    """Kubeflow Pipelines rejected a request, or answered in a way modelgate cannot use."""


class KFPConnectionError(SubmitError):
    """The Kubeflow Pipelines API server could not be reached."""


class KFPAuthError(SubmitError):
    """The API server wants credentials (401) or refused them (403)."""


class KFPNotFoundError(SubmitError):
    """The named pipeline, run or recurring run does not exist."""


class KFPConflictError(SubmitError):
    """A pipeline, version or experiment of that name already exists (409)."""


class KFPServerError(SubmitError):
    """The API server failed (5xx); polling retries these."""


class RunTimeoutError(SubmitError, TimeoutError):
    """The run did not finish within the wait's timeout; it keeps running on the cluster."""


class ServingGateError(ModelgateError):
    """The serving benchmark (GuideLLM) could not run against the endpoint, or its report is
    unusable. A missed SLO bound is not this: the gate's result says so."""


class EndpointUnreachableError(ServingGateError):
    """The serving endpoint did not answer ``GET /v1/models`` like an OpenAI-compatible server."""
