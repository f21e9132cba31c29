"""Compiled packages: run arguments checked against the pipeline's parameters."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from modelgate.errors import ConfigError
from modelgate.kfp import check_arguments
from tests.unit.kfp_support import ARGUMENTS, PACKAGE, TOLERATIONS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"model_id": "x"}, "'model_store' is required"),
        ({**ARGUMENTS, "tolerations": json.dumps(TOLERATIONS)}, "'tolerations' is a LIST"),
        ({**ARGUMENTS, "node_selector": [["a", "b"]]}, "'node_selector' is a STRUCT"),
        ({**ARGUMENTS, "eval_limit": "10"}, "'eval_limit' is a NUMBER_INTEGER"),
        ({**ARGUMENTS, "eval_offline": 1}, "'eval_offline' is a BOOLEAN"),
        ({**ARGUMENTS, "modle_id": "x"}, "did you mean 'model_id'?"),
    ],
)
def test_check_arguments_names_each_wrong_argument(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_arguments(PACKAGE, arguments)
