"""Where a credential may travel, and how URLs that carry one are shown.

One rule for every token modelgate sends (``HF_TOKEN`` to a Hub or mirror,
``MODEL_REGISTRY_TOKEN`` to the Kubeflow Model Registry): over ``https://``, or over plain
``http://`` only to this machine (``127.0.0.0/8``, ``::1``, ``localhost``). Anything else would
hand the token to every host on the path, so it is dropped with a warning (the Hub) or refused
(the registry) unless explicitly allowed: ``allow_insecure=True`` or
``MODELGATE_ALLOW_INSECURE_TOKEN=1``.

:func:`redact_url` is what every log line, message, output and record uses to show a URL that
may hold ``user:password@`` (an ``mlflow+https://user:pw@host`` registry URL) or a secret
query parameter.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from modelgate.errors import ConfigError

logger = logging.getLogger(__name__)

ALLOW_INSECURE_TOKEN_ENV = "MODELGATE_ALLOW_INSECURE_TOKEN"
"""Set to ``1`` to send tokens over plain ``http://`` to hosts other than this machine."""

REDACTED = "***"
"""What :func:`redact_url` writes in place of a password or a secret query value."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_SECRET_QUERY = re.compile(r"token|secret|passw|pwd|key|sig|credential|auth", re.I)


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is ``1``/``true``/``yes``/``on``."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` (and ``*.localhost``), ``127.0.0.0/8`` and ``::1``."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _transport(url: str) -> tuple[str, str | None]:
    """``(scheme, host)`` of ``url``; a ``mlflow+`` prefix is ignored."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if "+" in scheme:
        scheme = scheme.rsplit("+", 1)[1]
    return scheme, parts.hostname


def is_secure_transport(url: str) -> bool:
    """True when a credential may be sent to ``url``: ``https``, or ``http`` to loopback."""
    scheme, host = _transport(url)
    return scheme == "https" or (scheme == "http" and is_loopback_host(host))


def insecure_allowed(allow_insecure: bool | None = None) -> bool:
    """``allow_insecure`` when given, else ``$MODELGATE_ALLOW_INSECURE_TOKEN``."""
    return env_flag(ALLOW_INSECURE_TOKEN_ENV) if allow_insecure is None else allow_insecure


def token_for(
    url: str,
    token: str | None,
    *,
    allow_insecure: bool | None = None,
    what: str = "token",
    refuse: bool = False,
    fix: str | None = None,
) -> str | None:
    """The token to send to ``url``, or None when it must not travel there.

    Args:
        url: Where the token would go (a ``mlflow+`` prefix is ignored).
        token: The configured token; None or empty means none.
        allow_insecure: Send it over plain ``http://`` to any host anyway; None reads
            ``$MODELGATE_ALLOW_INSECURE_TOKEN``.
        what: The token's name in messages, e.g. ``"HF_TOKEN"``.
        refuse: Raise instead of dropping the token with a warning.
        fix: How to allow it, appended to the message (default: the env var).

    Returns:
        ``token`` when the transport protects it (or insecure sending is allowed), else None.

    Raises:
        ConfigError: ``refuse`` is set and the token would go over plain HTTP to another host.
    """
    if not token:
        return None
    if is_secure_transport(url) or insecure_allowed(allow_insecure):
        return token
    how = fix or f"set {ALLOW_INSECURE_TOKEN_ENV}=1 to send it anyway"
    message = (
        f"{what} is not sent to {redact_url(url)}: plain http:// to a host other than this "
        f"machine would expose it; use an https:// URL, or {how}"
    )
    if refuse:
        raise ConfigError(message)
    logger.warning(message)
    return None


def redact_url(url: str) -> str:
    """``url`` without its password and secret query values, safe to log, print and record.

    ``mlflow+https://user:pw@host/x?token=t`` becomes ``mlflow+https://user:***@host/x?token=***``;
    ``https://tok@host`` becomes ``https://***@host``. A string that is not a URL is returned
    unchanged.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED if "@" in text else text
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        # a lone user name may be a token (https://<token>@host)
        netloc = f"{user}:{REDACTED}@{hostport}" if sep else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_QUERY.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*"
            )
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, a log line) with the secrets of ``url`` replaced by ``***``.

    The secrets are what :func:`redact_url` takes out: the password (or a lone user name, which
    may be a token) and secret query values, as written and percent-decoded.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return text
    secrets: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, sep, password = userinfo.partition(":")
        secrets.add(password if sep else user)
    secrets |= {v for k, v in parse_qsl(parts.query) if _SECRET_QUERY.search(k)}
    secrets |= {unquote(s) for s in secrets}
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def is_redacted(url: str) -> bool:
    """True when ``url`` came out of :func:`redact_url` with something taken out."""
    return f"{REDACTED}@" in url or f"={REDACTED}" in url
