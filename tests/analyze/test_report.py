"""The teacher comparison report over a small synthetic run directory in the store's layout."""

from __future__ import annotations

import random
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

from distillery.analyze.report import build_report
from distillery.schema.records import Attempt, Trace, make_query
from distillery.core.store import RunDir, write_jsonl
from distillery.testing import finish_shard

CATEGORIES = ("math", "code", "chat")
STEPS = ("ingest", "generate", "perplexity", "structure")


def _trace(rng: random.Random, teacher: str, index: int, length: int, passes: bool) -> Trace:
    category = CATEGORIES[index % len(CATEGORIES)]
    query = make_query(category, [{"role": "user", "content": f"question {index}"}])
    tries = rng.randint(1, 3)
    attempts = [Attempt(index=a, seed=a, response="<think>t</think><answer>a</answer>", score=0.95 if passes and a == tries - 1 else 0.2,
                        passed=passes and a == tries - 1, completion_tokens=length) for a in range(tries)]
    return Trace(query=query, teacher=teacher, attempts=attempts, accepted=tries - 1 if passes else None,
                 response_tokens=length if passes else 0)


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, dict]:
    """Two teachers: 'terse' answers short (all under 1,024 tokens), 'verbose' long (a third over 10,240)."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    recipe = {"name": "report-test", "run_dir": str(run.root), "teachers": [{"name": "terse", "model": "m"}, {"name": "verbose", "model": "m"}],
              "steps": {"ingest": {}, "generate": {}, "perplexity": {"max_ppl": 30.0}, "structure": {}}}
    run.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    write_jsonl(run.shard("ingest", None, 0).output, [])
    expected: dict = {}
    rng = random.Random(3)
    for teacher, lengths in (("terse", lambda i: 100 + 7 * i), ("verbose", lambda i: 2000 + 9000 * (i % 3 == 0) * (i % 2 + 1))):
        traces = [_trace(rng, teacher, i, lengths(i), passes=i % 5 != 4) for i in range(30)]
        accepted = [t for t in traces if t.accepted is not None]
        finish_shard(run, "generate", teacher, 0, [t.model_dump(mode="json") for t in accepted],
                    [(t.model_dump(mode="json"), "no attempt reached 0.9 after 3 attempts") for t in traces if t.accepted is None])
        for t in accepted:
            t.ppl = rng.uniform(2, 40)
        low = [t for t in accepted if t.ppl <= 30]
        finish_shard(run, "perplexity", teacher, 0, [t.model_dump(mode="json") for t in low],
                    [(t.model_dump(mode="json"), f"perplexity {t.ppl:.3f} above the cutoff 30.000") for t in accepted if t.ppl > 30])
        finish_shard(run, "structure", teacher, 0, [t.model_dump(mode="json") for t in low[:-1]],
                    [(low[-1].model_dump(mode="json"), "malformed structure: empty answer")])
        final = np.array([t.response_tokens for t in low[:-1]])
        expected[teacher] = {
            "final": final, "ppl": sorted(t.ppl for t in accepted), "accepted": len(accepted), "queries": len(traces),
            "attempts": sum(len(t.attempts) for t in traces),
        }
    return run.root, expected


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._heading: str | None = None
        self._capture: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "h2":
            self._capture = []
        elif tag == "table" and self._heading:
            self.tables[self._heading] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._capture = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._capture is not None:
            self._heading, self._capture = "".join(self._capture), None
        elif tag in ("td", "th") and self._capture is not None and self._row is not None:
            self._row.append("".join(self._capture).strip())
            self._capture = None
        elif tag == "tr" and self._row is not None and self._heading in self.tables:
            self.tables[self._heading].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture.append(data)


def _table(page: _Page, prefix: str) -> dict[str, list[str]]:
    rows = next(rows for heading, rows in page.tables.items() if heading.startswith(prefix))
    return {row[0]: row[1:] for row in rows}


def test_report_compares_teachers_side_by_side(run_dir: tuple[Path, dict]) -> None:
    root, expected = run_dir
    path = build_report(root)
    assert path == root / "report" / "report.html"
    page = _Page()
    page.feed(path.read_text())
    lengths = _table(page, "Token length")
    assert lengths[""] == ["terse", "verbose"]
    for column, teacher in enumerate(("terse", "verbose")):
        final = expected[teacher]["final"]
        assert lengths["traces"][column] == str(final.size)
        assert lengths["share < 1,024 tokens"][column] == f"{100 * np.mean(final < 1024):.1f}%"
        assert lengths["share > 10,240 tokens"][column] == f"{100 * np.mean(final > 10240):.1f}%"
        assert lengths["median"][column] == f"{np.median(final):,.0f}"
    assert lengths["share < 1,024 tokens"] == ["100.0%", "0.0%"] and lengths["share > 10,240 tokens"][1] != "0.0%"
    acceptance = _table(page, "Acceptance rate")
    for column, teacher in enumerate(("terse", "verbose")):
        e = expected[teacher]
        assert acceptance["all"][column] == f"{100 * e['accepted'] / e['queries']:.1f}% ({e['accepted']}/{e['queries']})"
        assert _table(page, "Attempts per query")["all"][column] == f"{e['attempts'] / e['queries']:.2f}"
        assert _table(page, "Perplexity")["median"][column] == f"{np.median(e['ppl']):,.2f}"
    assert set(acceptance) == {"", "math", "code", "chat", "all"}
    funnel = _table(page, "Records per step")
    assert list(funnel) == ["", "generate", "perplexity", "structure"], "per-teacher steps in recipe order"
    reasons = _table(page, "Commonest reject reasons")
    assert "above the cutoff" in reasons["perplexity"][0] and "#" in reasons["perplexity"][0], "numbers blanked to group reasons"
    assert sorted(page.images) == sorted(["lengths_hist.png", "lengths_cdf.png", "perplexity.png", "verify_scores.png",
                                          "acceptance.png", "attempts.png"])
    for image in page.images:
        pixels = matplotlib.image.imread(root / "report" / image)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 0.01, f"{image} is a real plot"
    numbers = (root / "report" / "report.json").read_text()
    assert '"share_under_1024": 1.0' in numbers


def test_report_page_renders_in_a_browser(run_dir: tuple[Path, dict], tmp_path: Path) -> None:
    """Look at the page as an image: headless Chromium screenshots it (Debian package `chromium`)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian package chromium is not installed (apt-get install chromium); HTML structure is tested above")
    page = build_report(run_dir[0])
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1400,2600", page.as_uri()], check=True, timeout=120, capture_output=True)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2600, 1400)
    ink = (pixels.mean(axis=2) < 0.5).mean()
    assert 0.005 < ink < 0.5, "text and plots drawn on a white page"
    colored = (pixels.max(axis=2) - pixels.min(axis=2) > 0.3).mean()
    assert colored > 0.001, "the embedded plots loaded (coloured lines and bars)"
