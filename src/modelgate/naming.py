"""Naming policy: registered model names, version names and model-store keys.

Registered model names are slash-free because KServe's ``model-registry://<model>/<version>``
URI splits on ``/``; the Hub id is kept as the ``source_repo`` property instead. Store keys put
the commit sha in the path, so a folder's content never changes once written.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from modelgate.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SLUG_DROP = re.compile(r"[^a-z0-9._-]+")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def model_slug(repo_id: str) -> str:
    """A slash-free, lowercase name for a Hub id: ``org/Model-7B`` -> ``org--model-7b``.

    Raises:
        ConfigError: Nothing usable is left of ``repo_id``.
    """
    parts = [_SLUG_DROP.sub("-", p.lower()).strip("-.") for p in repo_id.strip().split("/")]
    slug = "--".join(p for p in parts if p)
    if not slug:
        raise ConfigError(f"cannot derive a model name from {repo_id!r}; pass a Hub id 'org/model'")
    return slug[:128]


def registered_model_name(repo_id: str, explicit: str | None = None) -> str:
    """The registered model name: ``explicit`` if given (validated), else :func:`model_slug`.

    Raises:
        ConfigError: ``explicit`` has a ``/`` or other characters the registry URI cannot carry.
    """
    if explicit:
        if not _NAME.match(explicit):
            raise ConfigError(
                f"registered model name {explicit!r} must be letters, digits, '.', '_' or '-' "
                f"(no '/': model-registry:// URIs split on it), e.g. {model_slug(explicit)!r}"
            )
        return explicit
    return model_slug(repo_id)


#: Longest served name: KServe derives ``<name>-predictor-<canary>`` Services and Deployments
#: from it, and a Service name is a DNS-1035 label of at most 63 characters.
SERVING_NAME_MAX = 40
_DNS_DROP = re.compile(r"[^a-z0-9]+")


def serving_name(explicit: str | None, *, repo_id: str = "", registered: str | None = None) -> str:
    """The InferenceService / served model name: ``explicit`` if given, else one per registered
    model (so one model's rollback never touches another model's service).

    ``org/Model_7B.v2`` -> ``org-model-7b-v2``; a name that does not start with a letter gets
    ``m-`` in front; one longer than :data:`SERVING_NAME_MAX` is cut and ends in 6 hex digits of
    its hash, so two long names stay apart.

    Raises:
        ConfigError: Neither a name nor a model to derive one from.
    """
    if explicit:
        return explicit  # validated where it is used (DeploySpec names the rule)
    source = registered_model_name(repo_id, registered) if (repo_id or registered) else ""
    name = _DNS_DROP.sub("-", source.lower()).strip("-")
    if not name:
        raise ConfigError("no deploy name: pass deploy_name or a model to derive it from")
    if not name[0].isalpha():
        name = f"m-{name}"
    if len(name) > SERVING_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:6]
        name = f"{name[: SERVING_NAME_MAX - 7].rstrip('-')}-{digest}"
    return name


def version_name(*, scheme: str, commit_sha: str, run_id: str | None) -> str:
    """``<scheme>-<commit[:12]>-<run id tail>``: one version per source commit, scheme and run."""
    run = (run_id or "local").split("/")[-1][-12:] or "local"
    return f"{scheme.lower()}-{commit_sha[:12] or 'unknown'}-{run}"


def _model_prefix(repo_id: str, commit_sha: str) -> str:
    if not _SHA.match(commit_sha):
        raise ConfigError(f"store keys need a commit sha, got {commit_sha!r}")
    return f"{model_slug(repo_id)}/{commit_sha}"


def base_key(repo_id: str, commit_sha: str, *, fingerprint: str) -> str:
    """Store key of a downloaded snapshot (``fingerprint``: the file selection).

    Raises:
        ConfigError: ``commit_sha`` is not a hex sha (a branch name would make the key mutable).
    """
    return f"{_model_prefix(repo_id, commit_sha)}/base-{fingerprint}"


def recipe_fingerprint(**inputs: Any) -> str:
    """12 hex digits identifying what a quantized folder was made from."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def quantized_key(repo_id: str, commit_sha: str, *, scheme: str, fingerprint: str) -> str:
    """Store key of a quantized candidate.

    Fingerprints have a fixed length, so no sibling key is a string prefix of another (see
    :mod:`modelgate.storage`).

    Raises:
        ConfigError: ``commit_sha`` is not a hex sha.
    """
    return f"{_model_prefix(repo_id, commit_sha)}/{scheme.lower()}-{fingerprint}"
