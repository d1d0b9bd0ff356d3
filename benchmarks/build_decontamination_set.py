"""Build tests/data/decontamination/ (the public labelled contamination set) from three public repositories.

Sources (fetched git checkouts; their commits are written into the set's README):
- openai/grade-school-math (MIT): GSM8K test questions (the benchmark originals, the index) and train questions
  (fresh problems);
- google-research/url-nlp, mgsm/ (CC-BY 4.0): MGSM, human translations of the first 250 GSM8K test problems into
  bn, de, es, fr, ja, ru, sw, te, th, zh, and the translated few-shot exemplars (fresh, not GSM8K test items);
- lm-sys/llm-decontaminator (Apache-2.0), data/rephrase/rephrase_gsm8k.jsonl: GPT-4 rephrasings of every GSM8K
  test problem (arXiv 2311.04850).

The 250 MGSM problems are shuffled (seed 26): the first INDEXED are the benchmark (index.jsonl); contaminated rows
come from the first COPIED of those: the rephrasing (`paraphrase`), the ten translations (`translation`) and a
`light_edit` (distillery.testing.labelled.word_edits, 5% of the words). Fresh rows (`fresh`): MGSM problems left
out of the index in English and two of their translations, GSM8K train problems, and the exemplars in every
language. Each row's `split` (calibration or held_out) is drawn per source problem before any score is seen, so
all variants of one item fall in the same part.

    python benchmarks/build_decontamination_set.py --gsm8k DIR --mgsm DIR --rephrase DIR [--out tests/data/decontamination]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from pathlib import Path
from typing import Any

from distillery.testing.labelled import word_edits

LANGUAGES = ("bn", "de", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
INDEXED = 150
COPIED = 60
FRESH_MGSM = 40
FRESH_TRAIN = 60
CALIBRATION_SHARE = 0.4
SEED = 26


def git_show(repo: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout


def git_head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def exemplars(mgsm: Path) -> dict[str, list[str]]:
    """The translated few-shot questions per language, without their 'Question:' label."""
    namespace: dict[str, Any] = {}
    exec(compile(git_show(mgsm, "mgsm/exemplars.py"), "exemplars.py", "exec"), namespace)  # data only: dicts, lists
    found = {}
    for lang, shots in namespace["MGSM_EXEMPLARS"].items():
        found[lang] = [shot["q"].split(":", 1)[1].strip() if ":" in shot["q"][:20] else shot["q"].strip()
                       for _, shot in sorted(shots.items(), key=lambda kv: int(kv[0]))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=Path, required=True, help="git dir of openai/grade-school-math")
    parser.add_argument("--mgsm", type=Path, required=True, help="git dir of google-research/url-nlp")
    parser.add_argument("--rephrase", type=Path, required=True, help="git dir of lm-sys/llm-decontaminator")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "decontamination")
    args = parser.parse_args()
    test = [json.loads(line)["question"] for line in git_show(args.gsm8k, "grade_school_math/data/test.jsonl").splitlines()]
    train = [json.loads(line)["question"] for line in git_show(args.gsm8k, "grade_school_math/data/train.jsonl").splitlines()]
    rephrased = [json.loads(line)["text"] for line in git_show(args.rephrase, "data/rephrase/rephrase_gsm8k.jsonl").splitlines()]
    translated = {lang: [line.split("\t")[0] for line in git_show(args.mgsm, f"mgsm/mgsm_{lang}.tsv").splitlines()]
                  for lang in LANGUAGES}
    rng = random.Random(SEED)
    order = list(range(250))
    rng.shuffle(order)
    indexed, outside = order[:INDEXED], order[INDEXED:]
    split_of: dict[str, str] = {}

    def split(source: str) -> str:
        return split_of.setdefault(source, "calibration" if rng.random() < CALIBRATION_SHARE else "held_out")

    rows: list[dict[str, Any]] = []

    def add(kind: str, lang: str, item: int | None, source: str, text: str) -> None:
        rows.append({"id": f"{kind}-{lang}-{source}", "split": split(source), "kind": kind, "lang": lang,
                     "item_id": None if item is None else f"test-{item:04d}", "source": source, "text": text.strip()})

    for item in indexed[:COPIED]:
        source = f"gsm8k-test-{item:04d}"
        question = rephrased[item].removeprefix("Question:").split("\nAnswer:")[0]
        add("paraphrase", "en", item, source, question)
        for lang in LANGUAGES:
            add("translation", lang, item, source, translated[lang][item])
        add("light_edit", "en", item, source, word_edits(test[item], rng))
    for item in outside[:FRESH_MGSM]:
        source = f"gsm8k-test-{item:04d}"
        add("fresh", "en", None, source, test[item])
        for lang in rng.sample(LANGUAGES, 2):
            add("fresh", lang, None, source, translated[lang][item])
    for item in rng.sample(range(len(train)), FRESH_TRAIN):
        add("fresh", "en", None, f"gsm8k-train-{item:04d}", train[item])
    for lang, questions in sorted(exemplars(args.mgsm).items()):
        for number, question in enumerate(questions, 1):
            add("fresh", lang, None, f"mgsm-exemplar-{number}", question)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "index.jsonl").open("w", encoding="utf-8") as out:
        for item in sorted(indexed):
            out.write(json.dumps({"id": f"test-{item:04d}", "question": test[item]}, ensure_ascii=False) + "\n")
    with (args.out / "labelled.jsonl").open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    commits = {"openai/grade-school-math": git_head(args.gsm8k), "google-research/url-nlp": git_head(args.mgsm),
               "lm-sys/llm-decontaminator": git_head(args.rephrase)}
    (args.out / "sources.json").write_text(json.dumps(commits, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
