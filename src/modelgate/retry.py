"""The one place that retries: a bounded backoff helper and a ``wait_until`` poller."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def backoff(
    fn: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    what: str = "operation",
) -> T:
    """Call ``fn`` until it succeeds, retrying only on ``retry_on`` with exponential delays.

    Args:
        fn: Zero-argument callable to run.
        retry_on: Exception types that mean "transient, try again".
        attempts: Total number of calls, at least 1.
        base_delay: First delay in seconds; doubles each retry up to ``max_delay``.
        max_delay: Upper bound of one delay.
        what: Name of the operation, for log lines.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        The last exception from ``fn`` once attempts are exhausted, or any exception not in
        ``retry_on`` immediately.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as e:
            if attempt == attempts:
                raise
            logger.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, e, attempt, attempts - 1, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 1.0,
    what: str = "condition",
    on_timeout: Callable[[str], BaseException] | None = None,
) -> float:
    """Poll ``predicate`` until it returns True or ``timeout`` seconds pass.

    Args:
        predicate: Returns True when the wait is over. Exceptions propagate.
        timeout: Seconds to wait at most.
        interval: Seconds between polls.
        what: Name of the awaited condition, for the timeout message.
        on_timeout: Builds the exception raised on timeout; defaults to ``TimeoutError``.

    Returns:
        Seconds waited.

    Raises:
        TimeoutError: (or what ``on_timeout`` builds) when the deadline passes first.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what}"
            raise (on_timeout(message) if on_timeout else TimeoutError(message))
        time.sleep(interval)
