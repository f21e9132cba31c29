"""Cron expressions for KFP recurring runs: check one, return the form KFP's scheduler parses.

KFP's ScheduledWorkflow controller parses ``trigger.cron_schedule.cron`` with ``robfig/cron`` v1
``cron.Parse``, whose fields are *seconds first*: ``sec min hour dom month [dow]``, evaluated in
UTC. A standard 5-field crontab line given to it unchanged is silently read as
``sec min hour dom month`` (``0 3 * * 1`` = minute 3 of every hour in January), so
:func:`validate_cron` always returns the explicit 6-field form, and rejects a malformed
expression naming the field before any request.
"""

from __future__ import annotations

from modelgate.errors import ConfigError

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
#: (name, low, high, names, allows ?) of the 6 robfig/cron fields, seconds first.
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int] | None, bool], ...] = (
    ("second", 0, 59, None, False),
    ("minute", 0, 59, None, False),
    ("hour", 0, 23, None, False),
    ("day-of-month", 1, 31, None, True),
    ("month", 1, 12, _MONTHS, False),
    ("day-of-week", 0, 6, _DAYS, True),
)
_CRON_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_CRON_EXAMPLE = (
    "e.g. '0 3 * * 1' (minute hour day-of-month month day-of-week: Mondays 03:00 UTC) "
    "or KFP's 6-field form with seconds first, '0 0 3 * * 1'"
)


def _cron_value(token: str, low: int, high: int, names: dict[str, int] | None) -> int:
    if names is not None and token.lower() in names:
        return names[token.lower()]
    if not token.isdigit():
        raise ValueError(f"{token!r} is not a number{' or a name' if names else ''}")
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def _check_cron_field(text: str, spec: tuple[str, int, int, dict[str, int] | None, bool]) -> None:
    _, low, high, names, allows_question = spec
    if not text:
        raise ValueError("is empty")
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash:
            if not step.isdigit() or int(step) < 1:
                raise ValueError(f"step {step!r} in {part!r} must be a whole number >= 1")
        if base == "*" or (base == "?" and allows_question):
            continue
        if base == "?":
            raise ValueError("'?' is only allowed in day-of-month and day-of-week")
        start_text, dash, end_text = base.partition("-")
        start = _cron_value(start_text, low, high, names)
        if dash:
            end = _cron_value(end_text, low, high, names)
            if start > end:
                raise ValueError(f"range {base!r} runs backwards")


def validate_cron(expression: str) -> str:
    """Check a cron expression and return the 6-field form KFP's scheduler parses.

    Accepts a standard 5-field crontab line (``minute hour day-of-month month day-of-week``) or
    KFP's 6-field form with seconds first, and the descriptors ``@hourly``, ``@daily``,
    ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``. Each field may be ``*``, a number, a
    name (``JAN``-``DEC``, ``SUN``-``SAT``), a range ``a-b``, a step ``*/n``, ``a-b/n`` or
    ``a/n``, or a comma-separated list of those; ``?`` means "any" in day-of-month and
    day-of-week. Schedules run in UTC.

    Args:
        expression: The cron expression.

    Returns:
        The expression as 6 space-separated fields, seconds first (``'0 3 * * 1'`` becomes
        ``'0 0 3 * * 1'``).

    Raises:
        ConfigError: The expression is malformed; the message names the field and shows an
            example.
    """
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS:
            return _CRON_DESCRIPTORS[text]
        raise ConfigError(
            f"invalid cron expression {expression!r}: unknown descriptor; use one of "
            f"{', '.join(_CRON_DESCRIPTORS)} or fields, {_CRON_EXAMPLE}"
        )
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ConfigError(
            f"invalid cron expression {expression!r}: it has {len(fields)} field(s); expected 5 "
            f"(minute hour day-of-month month day-of-week) or 6 (second first), {_CRON_EXAMPLE}"
        )
    for value, spec in zip(fields, _CRON_FIELDS, strict=True):
        try:
            _check_cron_field(value, spec)
        except ValueError as e:
            field, low, high, names, _ = spec
            allowed = f"{low}-{high}" + (
                f" or {list(names)[0].upper()}-{list(names)[-1].upper()}" if names else ""
            )
            if names is _DAYS:
                allowed += ", 0 = Sunday"
            raise ConfigError(
                f"invalid cron expression {expression!r}: {field} field {value!r}: {e} "
                f"({field} takes {allowed}); {_CRON_EXAMPLE}"
            ) from None
    return " ".join(fields)
