"""The post-deploy smoke test: one completion and one chat completion must return text."""

from __future__ import annotations

import logging
from typing import Any

import requests

from modelgate.constants import SMOKE_PROMPT
from modelgate.errors import SmokeTestError
from modelgate.retry import backoff

logger = logging.getLogger(__name__)


def _post(url: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        resp = requests.post(url, json=payload, timeout=timeout)
        if resp.status_code >= 500:
            resp.raise_for_status()
        if resp.status_code != 200:
            raise SmokeTestError(f"POST {url} answered {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    try:
        return backoff(
            call,
            retry_on=(requests.ConnectionError, requests.Timeout, requests.HTTPError),
            attempts=3,
            what=f"POST {url}",
        )
    except requests.RequestException as e:
        raise SmokeTestError(f"POST {url} failed: {e}") from e


def smoke_test(
    endpoint: str,
    *,
    model: str,
    prompt: str = SMOKE_PROMPT,
    chat_message: str = "What is 2+3?",
    max_tokens: int = 8,
    timeout: float = 60.0,
) -> dict[str, str]:
    """One ``/v1/completions`` and one ``/v1/chat/completions`` call; both must return text.

    Args:
        endpoint: Server base URL (without ``/v1``).
        model: Served model name.
        prompt: Completion prompt.
        chat_message: User message for the chat call.
        max_tokens: Tokens to generate in each call.
        timeout: Seconds per request.

    Returns:
        ``{"completion": ..., "chat": ...}`` - the generated texts.

    Raises:
        SmokeTestError: A call failed or returned no text.
    """
    base = endpoint.rstrip("/")
    comp = _post(
        f"{base}/v1/completions",
        {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=timeout,
    )
    chat = _post(
        f"{base}/v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": chat_message}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
        timeout=timeout,
    )
    try:
        completion = comp["choices"][0]["text"]
        chat_text = chat["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise SmokeTestError(f"malformed OpenAI response: {comp!r} / {chat!r}") from e
    if not completion or not completion.strip():
        raise SmokeTestError(f"/v1/completions returned no text for {prompt!r}: {comp!r}")
    if not chat_text or not chat_text.strip():
        raise SmokeTestError(f"/v1/chat/completions returned no text: {chat!r}")
    logger.info("smoke test ok: completion=%r chat=%r", completion, chat_text)
    return {"completion": completion, "chat": chat_text}
