"""`distillery plan | run | submit | status | resume | report | export | explain`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import yaml

from distillery.core.recipe import Recipe, RecipeError, load_recipe, snapshot
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir, atomic_write
from distillery.executors import EXECUTORS

logger = logging.getLogger("distillery")

EPILOG = """examples:
  distillery plan jobs/quickstart.yaml            show steps, shards, resources (and sbatch scripts) without running
  distillery run jobs/quickstart.yaml             run everything locally (or with the recipe's executor)
  distillery submit jobs/am-thinking-distill.yaml submit one SLURM job array per step x teacher
  distillery status runs/quickstart               what is done, running, stale; counts, throughput, ETA
  distillery resume runs/quickstart               rerun / resubmit only missing or stale shards
  distillery rerun runs/quickstart --step generate --teacher smol-warm --shards 0   exactly these shards again
  distillery report runs/quickstart               teacher comparison: plots + one HTML page
  distillery verify runs/quickstart               every shard checked against its manifest (sha256, count)
  distillery export runs/quickstart --step generate --teacher smol-a --format am -o traces.jsonl
  distillery export runs/quickstart --step structure --teacher smol-a+strict --as parquet --limit 100 -o s.parquet
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
    if args.cost or args.calibrate:
        from distillery.ops.cost import cost_report

        print(cost_report(recipe, args.cost_inputs, args.nodes, args.calibrate))
        return 0
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
    for group in groups:  # e.g. the per-GPU memory arithmetic of a training step
        stage = recipe.build_stage(group.step, group.teacher)
        source = stage.input_step()
        upstream = None
        if source is not None:
            lineage = recipe.source_lineage(source, group.teacher) if recipe.has_data(source, group.teacher) else None
            upstream = recipe.build_stage(source, lineage).config
        report = stage.plan_report(group.resources, upstream)
        if report and group.step not in shown:
            shown.add(group.step)
            print("\n" + report)
    from distillery.executors import build_executor

    description = build_executor(recipe, run, "slurm" if args.sbatch else None).describe(groups)
    if description:
        print(description)
    return 0


def cmd_run(args: argparse.Namespace, kind: str | None = None) -> int:
    from distillery.core.plan import pending_groups
    from distillery.executors import build_executor

    recipe, run = _load(args.target, args.set)
    kind = kind or args.executor
    if Path(args.target).is_file():
        _write_snapshot(recipe, run)
        recipe = load_run_recipe(run)
    executor = build_executor(recipe, run, kind)
    groups = pending_groups(run, recipe, sweep=True, exclusive=executor.exclusive)
    if args.until:
        names = [spec.step for spec in recipe.steps]
        if args.until not in names:
            print(f"--until {args.until}: no such step; steps: {', '.join(names)}", file=sys.stderr)
            return 2
        allowed = set(names[: names.index(args.until) + 1])
        groups = [g for g in groups if g.step in allowed]
    if not groups:
        print(f"nothing to do: every shard of {run.root} is done and fresh")
        return 0
    started = time.time()
    ok = executor.execute(groups)
    if executor.blocking:
        from distillery.ops.status import collect_status, render_status
        from distillery.executors import render_timings

        print(render_status(collect_status(run, recipe)))
        print("\nwall time per step (this invocation)\n" + render_timings(executor.timings))
        print(f"\n{'finished' if ok else 'FAILED'} in {time.time() - started:.0f}s; outputs: {run.root}  "
              f"logs: {run.root / 'logs'}")
    else:
        print(f"submitted {len(groups)} job arrays; follow with: distillery status {run.root}")
    return 0 if ok else 1


def cmd_rerun(args: argparse.Namespace) -> int:
    """Run exactly the named shards of one step again, from scratch: their manifests and journals go first."""
    import dataclasses

    from distillery.core.plan import build_groups
    from distillery.executors import build_executor, executor_of_run

    recipe, run = _load(args.target, [])
    groups = [g for g in build_groups(recipe) if g.step == args.step and g.teacher == args.teacher
              and g.phase in ("process", "task")]
    if not groups:
        teachers = recipe.teachers_of(args.step) if args.step in [s.step for s in recipe.steps] else []
        print(f"rerun: no step {args.step!r} for teacher {args.teacher!r}; steps: "
              f"{', '.join(s.step for s in recipe.steps)}; teachers of that step: {teachers}", file=sys.stderr)
        return 2
    group = groups[0]
    shards = sorted(group.shards) if args.shards is None else sorted({int(s) for s in args.shards.split(",")})
    unknown = [s for s in shards if s not in group.shards]
    if unknown:
        print(f"rerun: {group.key} has shards 0-{group.num_shards - 1}, not {unknown}", file=sys.stderr)
        return 2
    live = {s for (key, s), state in executor_of_run(recipe, run).states().items()
            if key == group.key and state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING")}
    if live & set(shards):
        print(f"rerun: shards {sorted(live & set(shards))} of {group.key} are queued or running; cancel them first",
              file=sys.stderr)
        return 2
    for shard_index in shards:
        paths = run.shard(group.step, group.teacher, shard_index, recipe.compress)
        paths.manifest.unlink(missing_ok=True)
        paths.journal.unlink(missing_ok=True)
    executor = build_executor(recipe, run, args.executor)
    ok = executor.execute([dataclasses.replace(group, shards=shards, depends_on=[])])
    print(f"{'reran' if executor.blocking else 'resubmitted'} {group.key} shards {shards}"
          f"{'' if ok else ' (FAILED: see the shard logs)'}; `distillery resume {run.root}` brings later steps up "
          "to date if their inputs changed")
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from distillery.ops.status import collect_status, render_status, status_json
    from distillery.executors import executor_of_run

    recipe, run = _load(args.target, [])
    executor = executor_of_run(recipe, run)
    if args.json:
        print(json.dumps(status_json(collect_status(run, recipe, executor.states(), check_inputs=not args.fast)),
                         indent=1))
        return 0
    while True:
        text = render_status(collect_status(run, recipe, executor.states(), check_inputs=not args.fast))
        if not args.watch:
            print(text)
            return 0
        print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + str(run.root) + "\n" + text, flush=True)
        time.sleep(args.watch)


def cmd_report(args: argparse.Namespace) -> int:
    from distillery.analyze.report import build_report

    page = build_report(Path(args.target), easy=args.easy, hard=args.hard)
    print(f"report: {page}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distillery.ops.exporting import ExportError, export_step

    recipe, run = _load(args.target, [])
    try:
        result = export_step(run, recipe, args.step, args.teacher, args.format, Path(args.output),
                             container=args.container, limit=args.limit, seed=args.seed)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sampled = f" (a sample of {result.total}, seed {args.seed})" if result.written < result.total else ""
    print(f"wrote {result.written} records{sampled} to {args.output}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of records, got {text}")
    return value


def cmd_verify(args: argparse.Namespace) -> int:
    from distillery.core.integrity import verify_run

    run = RunDir(args.target)
    if not run.recipe.exists():
        raise FileNotFoundError(f"{run.recipe} does not exist: is {run.root} a distillery run directory?")
    checked, findings = verify_run(run)
    for finding in findings:
        print(f"MISMATCH {finding.manifest.relative_to(run.root)}: {finding.problem}")
        if args.invalidate:
            finding.manifest.unlink()
    advice = ""
    if findings:
        advice = (f"; their manifests were removed: `distillery resume {run.root}` reruns them" if args.invalidate
                  else "; rerun with --invalidate to mark them for `distillery resume`")
    print(f"{checked} shards checked against their manifests: {len(findings)} mismatched{advice}")
    return 1 if findings else 0


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
    p.add_argument("--cost", action="store_true",
                   help="estimate GPU-hours, shard durations, wall time and disk per step")
    p.add_argument("--cost-inputs", type=Path, metavar="FILE", help="YAML overriding the cost model's inputs")
    p.add_argument("--calibrate", type=Path, metavar="RUN",
                   help="measure throughputs from a run's manifests (implies --cost)")
    p.add_argument("--nodes", type=int, default=16, metavar="N",
                   help="cluster nodes for the wall-time estimate (default 16)")
    p.set_defaults(func=cmd_plan)
    p = add("run", "run every missing or stale shard with the recipe's executor (local blocks until done)")
    p.add_argument("--executor", choices=EXECUTORS.names(), help="override the recipe's executor")
    p.add_argument("--until", metavar="STEP", help="stop after this step (e.g. run query preparation only)")
    p.set_defaults(func=cmd_run)
    add("submit", "submit one SLURM job array per step x teacher x phase, with afterok dependencies").set_defaults(
        func=lambda a: cmd_run(a, "slurm"), executor=None, until=None)
    add("resume", "resubmit (or rerun locally) only missing or stale shards of a run").set_defaults(
        func=cmd_run, executor=None, until=None)
    p = add("rerun", "run exactly these shards of one step again, from scratch (e.g. after a bad node)",
            "run directory")
    p.add_argument("--step", required=True, help="step name, e.g. generate")
    p.add_argument("--teacher", help="teacher name for per-teacher steps")
    p.add_argument("--shards", help="comma-separated shard indices (default: every shard of the step)")
    p.add_argument("--executor", choices=EXECUTORS.names(), help="override the recipe's executor")
    p.set_defaults(func=cmd_rerun)
    p = add("status", "every step x teacher x shard: done, partial, running, pending, failed, stale; counts, ETA")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--fast", action="store_true", help="skip input-digest checks (large runs)")
    p.add_argument("--json", action="store_true", help="print the status as JSON (for dashboards) and exit")
    p.set_defaults(func=cmd_status)
    p = add("report", "teacher and variant comparison report (PNG plots + HTML + JSON)", "run directory")
    p.add_argument("--easy", default="math500", help="easy benchmark of the student-length analysis")
    p.add_argument("--hard", default="aime25", help="hard benchmark of the student-length analysis")
    p.set_defaults(func=cmd_report)
    p = add("export", "export a step's kept records (of one teacher or variant) as JSONL or Parquet",
            "run directory")
    p.add_argument("--step", required=True, help="step name, e.g. generate")
    p.add_argument("--teacher", help="teacher, or variant lineage <teacher>+<variant>, for per-teacher steps")
    p.add_argument("--format", choices=["am", "messages", "native"], default="native",
                   help="record layout: AM-Thinking-v1-Distilled, chat messages, or the run's own records")
    p.add_argument("--as", dest="container", choices=["jsonl", "parquet"], default="jsonl",
                   help="file type: JSONL, or Parquet for datasets.load_dataset('parquet', data_files=...) with "
                   "one schema per format (nested values that drift, e.g. AM's info, as JSON text)")
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="a seeded uniform sample of N records over every shard (all when the step has fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.set_defaults(func=cmd_export)
    p = add("verify", "recompute every shard's sha256 and record count and report shards that do not match their "
            "manifest (truncated or edited since)", "run directory")
    p.add_argument("--invalidate", action="store_true", help="remove the manifests of mismatched shards so that "
                   "`resume` reruns them (and everything made from them)")
    p.set_defaults(func=cmd_verify)
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
