"""`distillery plan | run | submit | status | resume | report | export | explain`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import yaml

from distillery.core.recipe import Recipe, RecipeError, load_recipe, snapshot
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir, atomic_write

logger = logging.getLogger("distillery")

EPILOG = """examples:
  distillery plan jobs/quickstart.yaml            show steps, shards, resources (and sbatch scripts) without running
  distillery run jobs/quickstart.yaml             run everything locally (or with the recipe's executor)
  distillery submit jobs/am-thinking-distill.yaml submit one SLURM job array per step x teacher
  distillery status runs/quickstart               what is done, running, stale; counts, throughput, ETA
  distillery resume runs/quickstart               rerun / resubmit only missing or stale shards
  distillery report runs/quickstart               teacher comparison: plots + one HTML page
  distillery export runs/quickstart --step generate --teacher smol-a --format am -o traces.jsonl
"""


def _load(target: str, overrides: list[str], check_paths: bool = True) -> tuple[Recipe, RunDir]:
    """A recipe file, or a run directory (its recipe snapshot)."""
    path = Path(target)
    if path.is_dir():
        run = RunDir(path)
        return load_run_recipe(run), run
    recipe = load_recipe(path, overrides, check_paths=check_paths)
    return recipe, RunDir(recipe.run_dir)


def _write_snapshot(recipe: Recipe, run: RunDir) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    with atomic_write(run.recipe) as out:
        out.write(f"# snapshot of {recipe.source}; every task of this run reads this file\n")
        out.write(yaml.safe_dump(snapshot(recipe), sort_keys=False, allow_unicode=True))


def cmd_plan(args: argparse.Namespace) -> int:
    from distillery.core.plan import build_groups, pending_groups

    recipe, run = _load(args.target, args.set, check_paths=not args.no_path_check)
    groups = build_groups(recipe)
    pending = {g.key: g for g in pending_groups(run, recipe)} if run.recipe.exists() else {g.key: g for g in groups}
    print(f"run {recipe.name!r} -> {run.root}   executor: {recipe.executor.kind}   teachers: "
          f"{[t.name for t in recipe.teachers] or '-'}")
    print(f"{'group':<36} {'shards':>6} {'todo':>5} {'kind':<5} {'cpus':>4} {'mem':>5} {'gpus':>4} {'tasks':>5} {'time':>6}  after")
    for group in groups:
        r = group.resources
        todo = len(pending[group.key].shards) if group.key in pending else 0
        print(f"{group.key:<36} {len(group.shards):>6} {todo:>5} {group.job_kind:<5} {r.cpus_per_task:>4} "
              f"{r.mem_gb:>4.0f}G {r.gpus_per_node:>4} {group.world_size:>5} {r.time_min:>5}m  "
              f"{', '.join(group.depends_on) or '-'}")
    shown: set[str] = set()
    for group in groups:  # training steps add their per-GPU memory arithmetic
        stage = recipe.build_stage(group.step, group.teacher)
        if hasattr(stage, "memory_report") and group.step not in shown:
            shown.add(group.step)
            print("\n" + stage.memory_report())
    if recipe.executor.kind == "slurm" or args.sbatch:
        from distillery.executors.slurm import render_sbatch

        for group in groups:
            print(f"\n# ---- sbatch for {group.key} ----")
            print(render_sbatch(recipe, group))
    return 0


def cmd_run(args: argparse.Namespace, kind: str | None = None) -> int:
    from distillery.core.plan import pending_groups
    from distillery.executors.base import build_executor

    recipe, run = _load(args.target, args.set)
    if kind is None and getattr(args, "executor", None):
        kind = args.executor
    if Path(args.target).is_file():
        _write_snapshot(recipe, run)
        recipe = load_run_recipe(run)
    groups = pending_groups(run, recipe)
    if getattr(args, "until", None):
        names = [spec.step for spec in recipe.steps]
        if args.until not in names:
            print(f"--until {args.until}: no such step; steps: {', '.join(names)}", file=sys.stderr)
            return 2
        allowed = set(names[: names.index(args.until) + 1])
        groups = [g for g in groups if g.step in allowed]
    if not groups:
        print(f"nothing to do: every shard of {run.root} is done and fresh")
        return 0
    executor = build_executor(recipe, run, kind)
    started = time.time()
    ok = executor.execute(groups)
    if (kind or recipe.executor.kind) == "local":
        from distillery.core.status import collect_status, render_status

        print(render_status(collect_status(run, recipe)))
        print(f"\n{'finished' if ok else 'FAILED'} in {time.time() - started:.0f}s; outputs: {run.root}  "
              f"logs: {run.root / 'logs'}")
    else:
        print(f"submitted {len(groups)} job arrays; follow with: distillery status {run.root}")
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from distillery.core.status import collect_status, render_status

    recipe, run = _load(args.target, [])
    while True:
        states = None
        if run.jobs_file().exists():
            from distillery.executors.slurm import query_states

            states = query_states(run)
        text = render_status(collect_status(run, recipe, states, check_inputs=not args.fast))
        if not args.watch:
            print(text)
            return 0
        print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + str(run.root) + "\n" + text, flush=True)
        time.sleep(args.watch)


def cmd_report(args: argparse.Namespace) -> int:
    from distillery.analyze.report import build_report

    page = build_report(Path(args.target))
    print(f"report: {page}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distillery.core.exporting import export_step

    recipe, run = _load(args.target, [])
    count = export_step(run, recipe, args.step, args.teacher, args.format, Path(args.output))
    print(f"wrote {count} records to {args.output}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from distillery.core.stage import stage_names, stage_type

    known = stage_names()
    for name in [args.stage] if args.stage else known:
        if name not in known:
            print(f"unknown stage {name!r}; stages: {', '.join(known)}", file=sys.stderr)
            return 2
        cls = stage_type(name)
        print(f"{name}: {(cls.__doc__ or cls.__module__).strip().splitlines()[0]}")
        for field_name, info in cls.Config.model_fields.items():
            default = "required" if info.is_required() else f"default {info.get_default(call_default_factory=True)!r}"
            print(f"  {field_name:<24} {info.description or ''} ({default})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Verified reasoning-distillation datasets from "
                                     "several teachers, and SFT of a student on them, locally or on SLURM.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, target_help: str = "recipe YAML or run directory") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("target", help=target_help)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. --set num_shards=8 (repeatable)")
        return p

    p = add("plan", "validate a recipe and show the task groups, shard counts, resources and sbatch scripts (dry run)")
    p.add_argument("--sbatch", action="store_true", help="print sbatch scripts even for a local recipe")
    p.add_argument("--no-path-check", action="store_true",
                   help="do not require input paths to exist (planning on a machine without the data mounted)")
    p.set_defaults(func=cmd_plan)
    p = add("run", "run every missing or stale shard with the recipe's executor (local blocks until done)")
    p.add_argument("--executor", choices=["local", "slurm"], help="override the recipe's executor")
    p.add_argument("--until", metavar="STEP", help="stop after this step (e.g. run query preparation only)")
    p.set_defaults(func=cmd_run)
    add("submit", "submit one SLURM job array per step x teacher x phase, with afterok dependencies").set_defaults(
        func=lambda a: cmd_run(a, "slurm"))
    add("resume", "resubmit (or rerun locally) only missing or stale shards of a run").set_defaults(func=cmd_run)
    p = add("status", "every step x teacher x shard: done, partial, running, pending, failed, stale; counts, ETA")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--fast", action="store_true", help="skip input-digest checks (large runs)")
    p.set_defaults(func=cmd_status)
    add("report", "teacher comparison report (PNG plots + HTML)", "run directory").set_defaults(func=cmd_report)
    p = add("export", "export a step's kept records", "run directory")
    p.add_argument("--step", required=True, help="step name, e.g. generate")
    p.add_argument("--teacher", help="teacher name for per-teacher steps")
    p.add_argument("--format", choices=["am", "messages", "native"], default="native", help="output format")
    p.add_argument("-o", "--output", required=True, help="output JSONL file")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("explain", help="list stages, or a stage's config fields with their meaning and defaults")
    p.add_argument("stage", nargs="?", help="stage type")
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        for noisy in ("faiss", "megatron", "httpx", "vllm", "sentence_transformers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    try:
        return args.func(args)
    except RecipeError as error:
        print(f"recipe error:\n{error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
