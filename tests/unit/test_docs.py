"""The documentation: generated pages up to date, README small, links and paths sound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_BYTES = 8192
#: The two commands a newcomer runs on a fresh machine.
SETUP_TARGETS = {"demo", "test"}
#: Paths of someone's machine that have no place in the docs.
MACHINE_PATHS = ("/work/", "/root/", "/home/")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)


def _pages() -> list[Path]:
    return [README, REPO / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]


def _without_code(text: str) -> str:
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _relative_links(text: str) -> list[str]:
    prose = _without_code(text)
    targets = _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.I)]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        base, n = slug, 1
        while slug in anchors:
            slug, n = f"{base}-{n}", n + 1
        anchors.add(slug)
    return anchors


def _setup_section(text: str) -> str:
    """The README section under the first heading about getting started or setting up."""
    match = re.search(
        r"^(#{1,6})\s+(?:get(?:ting)? started|set[- ]?up|quick ?start|install(?:ation)?)\b.*$",
        text,
        re.I | re.M,
    )
    assert match, "README.md has no set-up section (a heading like '## Get started')"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}}\s", rest, re.M)
    return rest[: end.start()] if end else rest


def test_generated_docs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_docs.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        stale = [ln for ln in result.stdout.splitlines() if "is stale" in ln]
        pytest.fail("\n".join(stale) or f"scripts/gen_docs.py --check failed:\n{result.stderr}")


def test_readme_is_small() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes; keep it under {README_MAX_BYTES} and move detail to docs/"
    )


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files(page: Path) -> None:
    assert page.is_file(), f"{page.relative_to(REPO)} is missing"
    broken = []
    for target in _relative_links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = page.parent / path.split("?", 1)[0]
        if path and not file.exists():
            broken.append(target)
        elif path and anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_readme_links_every_docs_page() -> None:
    links = {Path(t.split("#", 1)[0]).as_posix() for t in _relative_links(README.read_text())}
    missing = [
        p.relative_to(REPO).as_posix()
        for p in sorted(DOCS.glob("*.md"))
        if p.relative_to(REPO).as_posix() not in links
    ]
    assert not missing, f"README.md does not link to {missing}"


def test_readme_setup_is_make_demo_and_make_test() -> None:
    section = _setup_section(README.read_text(encoding="utf-8"))
    targets = set(re.findall(r"\bmake\s+([A-Za-z0-9_.-]+)", section))
    assert SETUP_TARGETS <= targets, (
        f"the set-up section must show make demo and make test, has {targets}"
    )
    assert targets <= SETUP_TARGETS, (
        f"the set-up section names other make commands: {sorted(targets - SETUP_TARGETS)}"
    )


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_machine_paths(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = sorted({p for p in MACHINE_PATHS if p in text})
    assert not found, f"{page.relative_to(REPO)} contains paths of a machine: {found}"
