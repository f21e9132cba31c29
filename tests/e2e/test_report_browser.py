"""The gate page rendered by a real browser (headless Chromium): every label of the chart lies
inside its SVG and no two labels overlap, and the per-document view shows, escaped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from modelgate.evaluate import EvalResult, MetricValue
from modelgate.gates import check_gate, render_html
from modelgate.samples import Sample, SampleSet

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("MODELGATE_CHROMIUM", "/usr/bin/chromium")

# Runs after the page is parsed: the layout boxes the browser computed for every chart element.
CHECK = """<script>
(() => {
  const outside = [], overlaps = [];
  let checked = 0;
  for (const svg of document.querySelectorAll('svg')) {
    const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
    const texts = [];
    for (const el of svg.querySelectorAll('text, rect, line')) {
      const b = el.getBBox();
      checked += 1;
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > w + 0.5 || b.y + b.height > h + 0.5) {
        outside.push({text: el.textContent, x: b.x, y: b.y, w: b.width, h: b.height, svgW: w});
      }
      if (el.tagName === 'text') texts.push([el.textContent, b]);
    }
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const [ta, a] = texts[i], [tb, b] = texts[j];
      const apart = a.x >= b.x + b.width || b.x >= a.x + a.width
        || a.y >= b.y + b.height || b.y >= a.y + a.height;
      if (!apart)
        overlaps.push([ta, tb]);
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify({checked, outside, overlaps});
  document.body.appendChild(pre);
})();
</script>"""


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (make system-packages)")
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def result(values: dict[str, float], *, samples_of: list[float] | None = None) -> EvalResult:
    tasks: dict[str, dict[str, MetricValue]] = {}
    for name, v in values.items():
        task, metric = name.split("/")
        tasks.setdefault(task, {})[metric] = MetricValue(v, 0.02, True)
    return EvalResult(model="m", backend="hf", tasks=tasks)


def docs(task: str, values: list[float]) -> SampleSet:
    return SampleSet([Sample(task, i, f"h{i}", {"acc": v}) for i, v in enumerate(values)])


LONG_TASK = "mmlu_high_school_<macro>economics"


def write_page(path: Path, *, tasks: list[str]) -> Path:
    """A gate page on ``tasks`` (``arc`` first) with three models and a paired check on arc."""
    long_task = tasks[-1]
    base_docs = [1.0] * 60 + [0.0] * 40
    cand_docs = [0.0] * 8 + [1.0] * 52 + [1.0] * 3 + [0.0] * 37
    candidate = result({"arc/acc": 0.55, f"{long_task}/acc": 0.31})
    base = result({"arc/acc": 0.6, f"{long_task}/acc": 0.33})
    production = result({"arc/acc": 0.58, f"{long_task}/acc": 0.34})
    report = check_gate(
        candidate,
        config={
            "name": "browser",
            "thresholds": [
                {"task": "arc", "metric": "acc", "min_recovery": 0.9, "confidence": 0.95},
                {"task": long_task, "metric": "acc", "min": 0.3, "min_vs_production": 0.9},
            ][: len(tasks)],
        },
        base=base,
        production=production,
        production_version="v2",
        candidate_samples=docs("arc", cand_docs),
        base_samples=docs("arc", base_docs),
    )
    html = render_html(report, candidate=candidate, base=base, production=production)
    path.write_text(html)
    return path


@pytest.fixture
def page(tmp_path: Path) -> Path:
    return write_page(tmp_path / "gate.html", tasks=["arc", LONG_TASK])


def layout(html: str, tmp_path: Path) -> tuple[dict, str]:
    """What CHECK found in the page, and the DOM Chromium dumped."""
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", CHECK + "</body>"))
    proc = chromium("--dump-dom", checked.as_uri(), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = found[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return json.loads(text), proc.stdout


def test_one_metric_leaves_room_for_the_legend(tmp_path):
    # the chart used to be 200 px wide with legend labels drawn at x=166 and x=276
    page = write_page(tmp_path / "one.html", tasks=["arc"])
    found, _ = layout(page.read_text(), tmp_path)
    assert found["checked"] == 3 * 3 + 1 + 3 * 2
    assert found["outside"] == [] and found["overlaps"] == [], found


def test_every_chart_label_is_inside_its_svg_and_none_overlap(page, tmp_path):
    found, dom = layout(page.read_text(), tmp_path)
    # 2 metrics x 3 models (bar, whisker, value) + 2 axis labels + 3 legend swatches and labels
    assert found["checked"] == 2 * 3 * 3 + 2 + 3 * 2
    assert found["outside"] == [], found["outside"]
    assert found["overlaps"] == [], found["overlaps"]
    # the tables keep their header row; the per-document view is escaped text
    assert dom.count("<table>") == 2 and "<td>pairs</td>" in dom
    assert "Per document" in dom and "lost on 8" in dom and "gained on 3" in dom
    assert "mmlu_high_school_&lt;macro&gt;economics/acc" in dom and "<macro>" not in dom


def test_the_page_renders_to_a_screenshot(page, tmp_path):
    shot = tmp_path / "gate.png"
    proc = chromium(
        f"--screenshot={shot}", "--window-size=1100,1100", page.as_uri(), tmp_path=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    keep = os.environ.get("MODELGATE_KEEP_SCREENSHOT")
    if keep:  # to look at it: MODELGATE_KEEP_SCREENSHOT=gate.png pytest ...
        shutil.copyfile(shot, keep)
