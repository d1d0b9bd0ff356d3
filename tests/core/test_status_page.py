"""`status --metrics` and `status --html` on the quickstart recipe (two shards per step) with its first steps faked as
the runner leaves them (`finish_shard`): the Prometheus file parses with prometheus_client's parser and follows the
run under --watch; the page renders in headless chromium with every step x teacher x phase in it."""

from __future__ import annotations

import re
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from distillery import cli
from distillery.cli import main
from distillery.core.plan import build_groups
from distillery.core.recipe import Recipe, parse_recipe
from distillery.core.store import RunDir
from distillery.ops import status_history
from distillery.ops.status import collect_status
from distillery.ops.status_page import acceptance_series, throughput_series, write_page
from distillery.testing import finish_markers, finish_shard, make_trace, quickstart_query_records

QUICKSTART = Path(__file__).resolve().parents[2] / "jobs" / "quickstart.yaml"
CHROMIUM = Path("/usr/bin/chromium")
GENERATE_STATS = {"tokens_per_s": 410.0, "engine_idle_fraction": 0.05,
                  "acceptance_by_category": {"math": {"done": 4, "accepted": 3, "rate": 0.75},
                                             "code": {"done": 2, "accepted": 1, "rate": 0.5}}}


def _traces(teacher: str) -> list[dict[str, Any]]:
    return [make_trace(f"What is {n} + 1?", f"It is {n + 1}.", teacher).model_dump(mode="json") for n in range(6)]


def _run(tmp_path: Path) -> tuple[RunDir, Recipe]:
    """Queries prepared (ingest to decontaminate, one query dropped), smol-hot generated, smol-warm's shard 0
    generated and its shard 1 still missing (its log written); a history entry after each stage of that. Status
    runs with --fast: the kit's scan markers hold no input digests to check."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data.update(run_dir=str(tmp_path / "run"), num_shards=2)
    data["steps"]["ingest"]["inputs"] = [{"path": str(tmp_path / "q.jsonl")}]
    (tmp_path / "q.jsonl").write_text("")
    recipe = parse_recipe(data)
    run = RunDir(recipe.run_dir)
    run.root.mkdir(parents=True)
    run.recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    queries = [query.model_dump(mode="json") for query in quickstart_query_records()]
    halves = [queries[:15], queries[15:]]
    for step in ("ingest", "clean", "dedup", "near_dedup", "decontaminate"):
        if step in ("ingest", "dedup", "near_dedup", "decontaminate"):
            finish_markers(run, step, None, (0, 1))
        for shard_index, half in enumerate(halves):
            dropped = [(half[-1], "matches aime24 item #")] if step == "decontaminate" and shard_index else []
            finish_shard(run, step, None, shard_index, half[:-1] if dropped else half, dropped, recipe=recipe,
                         elapsed_s=3.0)
    status_history.append(run, collect_status(run, recipe, check_inputs=False), now=time.time() - 600)
    traces = {"smol-hot": (0, 1), "smol-warm": (0,)}
    for teacher, shards in traces.items():
        for shard_index in shards:
            finish_shard(run, "generate", teacher, shard_index, _traces(teacher), recipe=recipe, elapsed_s=20.0,
                         stats=GENERATE_STATS)
    logs = run.log_dir("generate", "smol-warm")
    logs.mkdir(parents=True)
    for shard_index in (0, 1):
        (logs / f"shard-{shard_index:05d}.process.log").write_text(f"shard {shard_index} log\n")
    status_history.append(run, collect_status(run, recipe, check_inputs=False), now=time.time() - 300)
    return run, recipe


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, keyed by (name, labels without `run`)."""
    return {(sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "run"))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


def _key(step: str, teacher: str, phase: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"step": step, "teacher": teacher, "phase": phase, **extra}.items()))


def test_metrics_file_parses_and_watch_keeps_it_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run, recipe = _run(tmp_path)
    prom = tmp_path / "textfile" / "distillery.prom"
    sleeps: list[float] = []

    def finish_the_last_shard_then_stop(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            first = _samples(prom)
            assert first[("distillery_shards", _key("generate", "smol-warm", "process", state="missing"))] == 1
            finish_shard(run, "generate", "smol-warm", 1, _traces("smol-warm"), recipe=recipe, elapsed_s=20.0,
                         stats=GENERATE_STATS)
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", finish_the_last_shard_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(["status", str(run.root), "--watch", "5", "--fast", "--metrics", str(prom)])
    assert sleeps == [5.0, 5.0] and f"metrics: {prom}" in capsys.readouterr().out
    samples = _samples(prom)
    assert samples[("distillery_shards", _key("generate", "smol-warm", "process", state="done"))] == 2
    assert ("distillery_shards", _key("generate", "smol-warm", "process", state="missing")) not in samples
    assert samples[("distillery_shards", _key("dedup", "", "process", state="done"))] == 2
    assert samples[("distillery_shards", _key("structure", "smol-hot", "scan", state="missing"))] == 2
    decontaminate = _key("decontaminate", "", "process")
    assert (samples[("distillery_records_in", decontaminate)], samples[("distillery_records_kept", decontaminate)],
            samples[("distillery_records_rejected", decontaminate)]) == (30, 29, 1)
    assert samples[("distillery_items_per_second", decontaminate)] == pytest.approx(30 / 6)
    assert samples[("distillery_eta_seconds", decontaminate)] == 0
    generate = _key("generate", "smol-warm", "process")
    assert samples[("distillery_records_in", generate)] == 12
    assert samples[("distillery_engine_tokens_per_second", generate)] == 410
    assert samples[("distillery_engine_idle_ratio", generate)] == pytest.approx(0.05)
    assert samples[("distillery_acceptance_ratio", _key("generate", "smol-warm", "process", category="math"))] == 0.75
    assert samples[("distillery_queries_finished", _key("generate", "smol-hot", "process", category="code"))] == 4
    assert not list(prom.parent.glob("*.prom.*")), "no temporary file left beside it"
    assert len(status_history.read(run)) == 4


class _Rows(HTMLParser):
    """The status table's rows (their `data-group`), the page's SVG plots and log links, from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[str] = []
        self.svgs = 0
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, Any] = dict(attrs)
        if tag == "tr" and values.get("data-group"):
            self.groups.append(values["data-group"])
        self.svgs += tag == "svg"
        if tag == "a":
            self.links.append(values["href"])


def _chromium(*flags: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--no-first-run",
                           f"--user-data-dir={profile}", *flags], capture_output=True, text=True, timeout=180,
                          check=True)


def _missing_groups(page: Path, recipe: Recipe, profile: Path) -> tuple[list[str], _Rows]:
    dom = _chromium("--dump-dom", page.as_uri(), profile=profile).stdout
    rows = _Rows()
    rows.feed(dom)
    return [group.key for group in build_groups(recipe) if group.key not in rows.groups], rows


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium to render the page headless")
def test_status_page_renders_every_step_in_headless_chromium(tmp_path: Path) -> None:
    run, recipe = _run(tmp_path)
    page = tmp_path / "site" / "status.html"
    assert main(["status", str(run.root), "--fast", "--html", str(page)]) == 0
    html = page.read_text()
    fetched = re.findall(r"""(?:src|href)=["']?https?:|url\(\s*["']?https?:|<link|<script|@import""", html)
    assert fetched == [], "self-contained: nothing fetched from the network"
    assert 'http-equiv="refresh"' not in html

    missing, rows = _missing_groups(page, recipe, tmp_path / "profile")
    assert missing == [] and len(rows.groups) == len(build_groups(recipe))
    assert rows.svgs == 2, "throughput and acceptance plots"
    assert "../run/logs/generate/smol-warm/shard-00001.process.log" in rows.links
    assert (page.parent / rows.links[rows.links.index("../run/logs/generate/smol-warm/shard-00001.process.log")]
            ).resolve().read_text() == "shard 1 log\n"
    screenshot = tmp_path / "status.png"
    _chromium(f"--screenshot={screenshot}", "--window-size=1400,1800", page.as_uri(), profile=tmp_path / "profile")
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 1800)
    colours = image.resize((140, 180)).getcolors(maxcolors=140 * 180)
    assert colours is not None and len(colours) > 20, "a rendered table and plots, not a blank page"

    statuses = [status for status in collect_status(run, recipe, check_inputs=False) if status.group.step != "ngram"]
    write_page(page, run, recipe.name, statuses, status_history.read(run), refresh_s=30)
    missing, _ = _missing_groups(page, recipe, tmp_path / "profile")
    assert missing == [f"ngram/{teacher}:{phase}" for teacher in ("smol-warm", "smol-hot")
                       for phase in ("scan", "merge", "process")], "the check sees a step left out"
    assert '<meta http-equiv="refresh" content="30">' in page.read_text()


def test_history_stays_bounded_spans_the_whole_run_and_gives_rates(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run, recipe = _run(tmp_path)
    monkeypatch.setattr(status_history, "MAX_ENTRIES", 8)
    statuses = collect_status(run, recipe, check_inputs=False)
    for minute in range(1, 31):
        status_history.append(run, statuses, now=time.time() + 60 * minute)
    with run.status_history().open("a") as history:
        history.write('{"time": 1, "gro')  # a writer killed mid-line
    status_history.append(run, statuses, now=time.time() + 60 * 31)
    entries = status_history.read(run)
    assert len(entries) <= 8 and entries[0]["time"] < time.time() - 500, "thinned, the first entry kept"
    assert entries[-1]["time"] > time.time() + 60 * 30, "the newest kept, after the cut line"
    rates = throughput_series(status_history.read(run)[:3])
    assert rates["generate/smol-hot:process"] and max(v for _, v in rates["generate/smol-hot:process"]) > 0
    assert acceptance_series(entries)["generate/smol-warm:process math"][-1][1] == 0.75
