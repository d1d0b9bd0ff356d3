"""What made a step's data: the chain of steps behind it (each with its settings, what it kept and dropped and
why), the teacher and its sampling, the verifiers, the variant rule, the benchmarks decontaminated against, the
input files and the licences they declare. Read from the run's recipe snapshot and its manifests only.

An input file declares its licence (first match wins) in its Parquet key-value metadata (`license`), in a Hugging
Face dataset card (`README.md` with a YAML `license:`) beside it, or in a `LICENSE`/`COPYING` file beside it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from distillery.core.lineage import Lineage
from distillery.core.recipe import Recipe
from distillery.core.store import Manifest, RunDir
from distillery.core.versions import code_version

LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING")


@dataclass
class StepFacts:
    """One step of the chain, summed over its finished shards."""

    step: str
    type: str
    lineage: str | None
    config: dict[str, Any] = field(repr=False)
    """The step's whole config, as JSON."""
    settings: dict[str, Any]
    """The step's thresholds, and its other settings that differ from the stage's defaults (the recipe holds the
    rest)."""
    shards: int = 0
    inputs: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    """Reject reasons (numbers masked), as the manifests count them."""
    rule: str = ""
    """A dataset variant's rule, as its manifests describe it."""
    code_versions: set[str] = field(default_factory=set)


@dataclass
class InputFacts:
    path: str
    source: str
    licence: str | None
    """The licence the file declares and where, e.g. `MIT (LICENSE)`; None when it declares none."""


@dataclass
class Provenance:
    step: str
    lineage: str | None
    run_name: str
    recipe_text: str
    recipe_sha256: str
    code_versions: list[str]
    """The versions the chain's shards were made with, then this exporter's (when it differs)."""
    chain: list[StepFacts]
    """From the first step to the exported one."""
    teacher: dict[str, Any] | None
    verify: dict[str, Any] | None
    """The generation step's verifiers per category and pass threshold."""
    variant: dict[str, Any] | None
    benchmarks: list[str]
    inputs: list[InputFacts]


def provenance(run: RunDir, recipe: Recipe, step: str, lineage: str | None) -> Provenance:
    """The lineage of `step`'s records of `lineage`, for its dataset card."""
    chain: list[StepFacts] = []
    current: str | None = step
    current_lineage = lineage
    while current is not None:
        chain.append(_step_facts(run, recipe, current, current_lineage))
        previous = recipe.previous_step(current, current_lineage)
        if previous is not None:
            current_lineage = (recipe.source_lineage(previous, current_lineage)
                               if recipe.has_data(previous, current_lineage) else None)
        current = previous
    chain.reverse()
    recipe_bytes = run.recipe.read_bytes()
    versions = sorted({version for facts in chain for version in facts.code_versions})
    versions += [code_version()] if code_version() not in versions else []
    by_type = {facts.type: facts for facts in chain}
    return Provenance(
        step=step, lineage=lineage, run_name=recipe.name, recipe_text=recipe_bytes.decode("utf-8"),
        recipe_sha256=hashlib.sha256(recipe_bytes).hexdigest(), code_versions=versions, chain=chain,
        teacher=recipe.teacher(lineage).model_dump(mode="json") if lineage else None,
        verify=_verify(by_type.get("generate")), variant=_variant(lineage, by_type.get("variants")),
        benchmarks=_benchmarks(by_type.get("decontaminate")), inputs=_inputs(by_type.get("ingest")))


def _manifests(run: RunDir, recipe: Recipe, step: str, lineage: str | None) -> list[Manifest]:
    num_shards = recipe.build_stage(step, lineage).num_shards()
    paths = (run.shard(step, lineage, index, recipe.compress).manifest for index in range(num_shards))
    return [Manifest.load(path) for path in paths if path.exists()]


def _step_facts(run: RunDir, recipe: Recipe, step: str, lineage: str | None) -> StepFacts:
    spec = recipe.step(step)
    config = spec.config.model_dump(mode="json")
    thresholds = {name: value for name, value in config.items() if "threshold" in name and value is not None}
    facts = StepFacts(step, spec.type, lineage, config,
                      {**thresholds, **spec.config.model_dump(mode="json", exclude_defaults=True)})
    for manifest in _manifests(run, recipe, step, lineage):
        facts.shards += 1
        facts.inputs += manifest.inputs
        facts.kept += manifest.kept
        facts.rejected += manifest.rejected
        facts.quarantined += manifest.quarantined
        facts.reasons.update(manifest.stats.get("reject_reasons") or {})
        facts.rule = str(manifest.stats.get("rule", facts.rule))
        facts.code_versions.add(manifest.code_version)
    return facts


def _verify(facts: StepFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    verify = facts.config["verify"]
    return {"verification": facts.config["verification"], "threshold": verify["threshold"],
            "verifiers": verify["verifiers"], "max_attempts": facts.config["max_attempts"]}


def _variant(lineage: str | None, facts: StepFacts | None) -> dict[str, Any] | None:
    name = Lineage.parse(lineage).variant if lineage else None
    if name is None:
        return None
    settings = facts.settings.get("rules", {}).get(name, {}) if facts is not None else {}
    return {"name": name, "rule": facts.rule if facts is not None else "", "settings": settings}


def _benchmarks(facts: StepFacts | None) -> list[str]:
    return [benchmark["name"] for benchmark in facts.config["benchmarks"]] if facts is not None else []


def _inputs(facts: StepFacts | None) -> list[InputFacts]:
    if facts is None:
        return []
    paths = [Path(spec["path"]) for spec in facts.config["inputs"]]
    return [InputFacts(str(path), spec.get("source") or path.name, declared_licence(path))
            for path, spec in zip(paths, facts.config["inputs"], strict=True)]


def declared_licence(path: Path) -> str | None:
    """The licence `path` declares, and where (see the module docstring); None when it declares none."""
    if path.suffix == ".parquet" and path.is_file():
        metadata = pq.read_metadata(path).metadata or {}
        if b"license" in metadata:
            return f"{metadata[b'license'].decode('utf-8', 'replace')} (Parquet metadata)"
    card = path.parent / "README.md"
    if card.is_file():
        header = _front_matter(card.read_text(encoding="utf-8", errors="replace"))
        if header.get("license"):
            return f"{header['license']} ({card.name})"
    for name in LICENCE_FILES:
        licence_file = path.parent / name
        if licence_file.is_file():
            with licence_file.open(encoding="utf-8", errors="replace") as handle:
                first = next((line.strip() for line in handle if line.strip()), "")
            return f"{first or 'unnamed'} ({name})"
    return None


def _front_matter(text: str) -> dict[str, Any]:
    """The YAML header of a dataset card, {} when there is none or it does not parse."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        header = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return header if isinstance(header, dict) else {}
