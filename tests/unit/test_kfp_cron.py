"""Cron expressions: KFP's 6-field form, and bad ones rejected before any request."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.errors import ConfigError
from modelgate.kfp import validate_cron
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture
from tests.unit.kfp_support import connected_client, isolated_kfp, schedule_release  # noqa: F401 - fixtures

pytestmark = pytest.mark.unit


# --- cron ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "kfp_form"),
    [
        ("0 3 * * 1", "0 0 3 * * 1"),
        ("0 0 3 * * 1", "0 0 3 * * 1"),
        ("*/15  *  * * *", "0 */15 * * * *"),
        ("30 2 ? * MON-FRI", "0 30 2 ? * MON-FRI"),
        ("0 0 1-15/2 jan,JUL *", "0 0 0 1-15/2 jan,JUL *"),
        ("@daily", "0 0 0 * * *"),
    ],
)
def test_cron_becomes_kfps_six_field_form_with_seconds_first(given: str, kfp_form: str) -> None:
    assert validate_cron(given) == kfp_form


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("* * *", "3 field(s)"),
        ("0 3 * * 8", "day-of-week field '8': 8 is out of range 0-6"),
        ("every monday", "2 field(s)"),
        ("0 25 * * *", "hour field '25'"),
        ("0 3 0 * *", "day-of-month field '0'"),
        ("0 3 * 13 *", "month field '13'"),
        ("*/0 * * * *", "step '0'"),
        ("0 3 5-1 * *", "runs backwards"),
        ("? 3 * * *", "'?' is only allowed in day-of-month and day-of-week"),
    ],
)
def test_bad_cron_is_rejected_naming_the_field_before_any_request(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    bad: str,
    named: str,
) -> None:
    before = len(fake_kfp.requests)

    with pytest.raises(ConfigError) as info:
        schedule_release(client, cron=bad)

    message = str(info.value)
    assert named in message
    assert "'0 3 * * 1'" in message  # an example of the right form
    assert len(fake_kfp.requests) == before  # nothing reached the server
