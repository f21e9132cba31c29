"""What a model repository holds is untrusted: its README front matter and its weights' headers
are read within bounds, and what the model card shows of them is inert text."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from modelgate.download import SAFETENSORS_MAX_HEADER, check_safetensors
from modelgate.errors import DownloadError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry.card import (
    FRONT_MATTER_MAX_CHARS,
    LICENSE_MAX_CHARS,
    front_matter,
    inline,
    license_of,
    render_card,
)

pytestmark = pytest.mark.unit

#: 306 bytes of YAML whose ``license`` expands to millions of characters through aliases.
BILLION_LAUGHS = """---
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
license: *f
---
# a model
"""


def _results() -> EvalResult:
    return EvalResult(
        model="m",
        backend="hf",
        tasks={"arc": {"acc": MetricValue(0.61, 0.015, True)}},
        n_samples={"arc": 1000},
    )


def _card(*, license: str, **lineage: str) -> str:  # noqa: A002 - the card's word
    return render_card(
        model_name="org--m",
        version_name="v1",
        uri="s3://models/org--m/v1",
        lineage={"source_repo": "org/M", "source_commit": "0" * 40, **lineage},
        results=_results(),
        gate_report="### Gate `g`: FAILED\n\n| metric | value |\n|---|---|\n| acc | 0.61 |",
        license=license,
    )


def _headings(card: str) -> list[str]:
    return re.findall(r"^ {0,3}#{1,6}(?:\s.*)?$", card, re.M)


# --- 5. the model card -------------------------------------------------------------------------
def test_billion_laughs_readme_is_refused_quickly() -> None:
    started = time.monotonic()
    license = license_of(BILLION_LAUGHS)  # noqa: A001 - the card's word
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert len(license) <= LICENSE_MAX_CHARS
    assert "lol" not in license
    assert front_matter(BILLION_LAUGHS) == {}


def test_front_matter_is_read_within_bounds() -> None:
    assert license_of("---\nlicense: apache-2.0\n---\n# M\n") == "apache-2.0"
    assert license_of("---\nlicense: [mit, apache-2.0]\n---\n") == "mit, apache-2.0"
    long = license_of(f"---\nlicense: {'x' * 10_000}\n---\n")
    assert len(long) == LICENSE_MAX_CHARS and long.endswith("…")
    deep = "---\nlicense: mit\nx: " + "[" * 200 + "]" * 200 + "\n---\n"
    assert license_of(deep) == "not stated"
    many = "---\nlicense: mit\nx: [" + ",".join(["1"] * 20_000) + "]\n---\n"
    assert len(many) < FRONT_MATTER_MAX_CHARS and license_of(many) == "not stated"
    unclosed = "---\nlicense: mit\n" + "# filler\n" * (FRONT_MATTER_MAX_CHARS // 9) + "---\n"
    assert license_of(unclosed) == "not stated"
    assert license_of("---\nlicense: mit\nwhen: 2020-13-45\n---\n") == "not stated"
    assert license_of(None) == "not stated" and license_of("# no front matter") == "not stated"


def test_license_cannot_forge_card_sections() -> None:
    forged = (
        "mit\n\n## Gate: PASSED\n\nall thresholds met | x |\n| gate | PASSED |\n<script>x</script>"
    )
    readme = "---\nlicense: |\n" + "".join(f"  {line}\n" for line in forged.splitlines()) + "---\n"
    license = license_of(readme)  # noqa: A001 - the card's word
    assert "## Gate: PASSED" in license  # read as text ...

    card = _card(license=license)

    # ... and rendered as text: no new heading, no new table row, no HTML
    assert _headings(card) == _headings(_card(license="mit"))
    assert not re.search(r"^#+\s*Gate: PASSED", card, re.M)
    assert "| gate | PASSED |" not in card and "<script>" not in card
    license_rows = [line for line in card.splitlines() if line.startswith("| license |")]
    assert len(license_rows) == 1
    assert len(re.findall(r"(?<!\\)\|", license_rows[0])) == 3  # still two cells


def test_lineage_values_are_rendered_inert() -> None:
    card = _card(
        license="mit",
        source_repo="org/M\n# Gate: PASSED",
        source_revision="main` | x |\n| gate | PASSED",
        quant_scheme="[click](https://evil.example) <img src=x>",
        pipeline_run_id="run\n\n## Approved",
    )
    assert _headings(card) == _headings(_card(license="mit"))
    assert "<img" not in card and not re.search(r"(?<!\\)\]\(https", card)
    assert not [line for line in card.splitlines() if line.startswith("| gate |")]
    assert inline("a|b\n# c <d> `e` [f](g)") == "a\\|b # c &lt;d&gt; \\`e\\` \\[f\\](g)"


# --- 6. safetensors headers --------------------------------------------------------------------
def test_safetensors_header_length_over_the_cap_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model-00001-of-00002.safetensors"
    weights.write_bytes((2**40).to_bytes(8, "little") + b'{"__metadata__":{}}')

    with pytest.raises(DownloadError) as info:
        check_safetensors(weights)

    message = str(info.value)
    assert str(weights) in message and "100 MB" in message and str(2**40) in message


def test_safetensors_header_length_is_refused_before_reading(tmp_path: Path) -> None:
    """A file large enough to hold the claimed header (sparse here) is still not read."""
    weights = tmp_path / "model.safetensors"
    claimed = SAFETENSORS_MAX_HEADER + 1
    with weights.open("wb") as fh:
        fh.write(claimed.to_bytes(8, "little"))
        fh.truncate(8 + claimed + 16)  # sparse: no disk space used
    started = time.monotonic()

    with pytest.raises(DownloadError, match="100 MB"):
        check_safetensors(weights)

    assert time.monotonic() - started < 1.0


def test_safetensors_header_within_the_cap_is_read(tmp_path: Path) -> None:
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    check_safetensors(weights)
    weights.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0")
    with pytest.raises(DownloadError, match="truncated"):
        check_safetensors(weights)
