"""The one place that retries: a bounded backoff helper and a ``wait_until`` poller.

:func:`backoff` is the only retry loop; :class:`RetryPolicy` is a named set of its bounds, so a
caller that retries several kinds of call (a registry backend) states its limits once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def backoff(
    fn: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    retry_if: Callable[[BaseException], bool] | None = None,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    deadline: float | None = None,
    what: str = "operation",
) -> T:
    """Call ``fn`` until it succeeds, retrying only transient failures with exponential delays.

    Args:
        fn: Zero-argument callable to run.
        retry_on: Exception types that mean "transient, try again".
        retry_if: Also transient: any exception for which this returns True (for errors whose
            type alone does not tell, e.g. an HTTP error with a 5xx status).
        attempts: Total number of calls, at least 1.
        base_delay: First delay in seconds; doubles each retry up to ``max_delay``.
        max_delay: Upper bound of one delay.
        deadline: Seconds from the first call after which no retry starts (None: no limit): a
            dead server fails within ``deadline`` plus one call's own timeout.
        what: Name of the operation, for log lines.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        The last exception from ``fn`` once attempts or the deadline are exhausted, or any
        exception that is not transient immediately.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    if not retry_on and retry_if is None:
        raise ValueError("give retry_on or retry_if: what is transient")
    start = time.monotonic()
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            transient = isinstance(e, retry_on) or (retry_if is not None and retry_if(e))
            late = deadline is not None and time.monotonic() - start + delay > deadline
            if not transient or attempt == attempts or late:
                raise
            logger.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, e, attempt, attempts - 1, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of :func:`backoff` for one kind of call.

    Attributes:
        attempts: Total calls at most.
        base_delay: First delay in seconds; doubles up to ``max_delay``.
        max_delay: Upper bound of one delay.
        deadline: Seconds after the first call when no retry starts any more (None: none).
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 4.0
    deadline: float | None = 10.0

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        retry_if: Callable[[BaseException], bool] | None = None,
        what: str = "operation",
    ) -> T:
        """:func:`backoff` with these bounds.

        Raises:
            What :func:`backoff` raises.
        """
        return backoff(
            fn,
            retry_on=retry_on,
            retry_if=retry_if,
            attempts=self.attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            deadline=self.deadline,
            what=what,
        )


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
