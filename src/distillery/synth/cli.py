"""`distillery synth`: write a seeded, paper-shaped query corpus for a rehearsal (see `jobs/rehearsal.yaml`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distillery.synth.tasks import MIX
from distillery.synth.write import write_queries

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a seeded synthetic query corpus in the paper's six categories",
                       description="Write N synthetic queries (math with answers, code with tests, multiple-choice "
                       "science, IFEval-style constraints for instruction following, chat and general) as "
                       "OUT/<category>.jsonl in the paper's mix; the `synthetic` teacher backend answers them.")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("-n", "--n", type=int, default=10_000, help="number of queries (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed: the same seed writes the same files (default 0)")
    p.add_argument("--duplicates", type=float, default=0.01, help="share of respaced copies for dedup (default 0.01)")
    p.add_argument("--near-duplicates", type=float, default=0.01,
                   help="share of one-word-longer copies for near_dedup (default 0.01)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise SystemExit("synth: --n must be at least 1")
    written = write_queries(args.out, args.n, args.seed, MIX, args.duplicates, args.near_duplicates)
    logger.info("synth: wrote %d queries to %s (%s)", sum(written.values()), args.out,
                ", ".join(f"{c} {k}" for c, k in written.items()))
    return 0
