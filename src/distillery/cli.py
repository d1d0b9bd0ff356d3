"""`distillery plan | run | submit | status | resume | report | export | explain | profile`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from distillery.core.console import setup_console
from distillery.core.recipe import Recipe, RecipeError, load_recipe, snapshot
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir, atomic_write
from distillery.executors import EXECUTORS
from distillery.synth import cli as synth_cli

if TYPE_CHECKING:
    from distillery.core.plan import TaskGroup
    from distillery.executors import Executor
    from distillery.ops.status import GroupStatus

EPILOG = """examples:
  distillery plan jobs/quickstart.yaml            show steps, shards, resources (and sbatch scripts) without running
  distillery run jobs/quickstart.yaml             run everything locally (or with the recipe's executor)
  distillery submit jobs/am-thinking-distill.yaml submit one SLURM job array per step x teacher
  distillery submit jobs/am-thinking-distill.yaml --wait 60   and follow the job arrays' states until they end
  distillery status runs/quickstart               what is done, running, stale; counts, throughput, ETA
  distillery status runs/quickstart --watch 60 --metrics /var/lib/node_exporter/textfile/q.prom --html status.html
  distillery resume runs/quickstart               rerun / resubmit only missing or stale shards
  distillery rerun runs/quickstart --step generate --teacher smol-warm --shards 0   exactly these shards again
  distillery report runs/quickstart               teacher comparison: plots + one HTML page
  distillery verify runs/quickstart               every shard checked against its manifest (sha256, count)
  distillery export runs/quickstart --step generate --teacher smol-a --format am -o traces.jsonl
  distillery profile detect > slurm/profiles/mine.yaml   draft this cluster's profile from sinfo/scontrol
  distillery export runs/quickstart --step structure --teacher smol-a+strict --as parquet --limit 100 -o s.parquet
  distillery export runs/quickstart --step structure --teacher smol-a --to-dir smol-a/   (datasets.load_dataset)
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
    for warning in recipe.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.cost or args.calibrate:
        from distillery.ops.cost import cost_report

        print(cost_report(recipe, args.cost_inputs, args.nodes, args.calibrate))
        return 0
    groups = build_groups(recipe)
    pending = {g.key: g for g in pending_groups(run, recipe)} if run.recipe.exists() else {g.key: g for g in groups}
    print(f"run {recipe.name!r} -> {run.root}   executor: {recipe.executor.kind}   teachers: "
          f"{[t.name for t in recipe.teachers] or '-'}")
    print(f"{'group':<36} {'shards':>6} {'todo':>5} {'kind':<5} {'cpus':>4} {'mem':>5} {'gpus':>4} {'tasks':>5} {'time':>6}  after")
    from distillery.serve.groups import server_groups

    for group in groups:
        client_todo = len(pending[group.key].shards) if group.key in pending else 0
        for row in (group, *server_groups(recipe, group)):  # a served teacher's replica and keeper jobs
            r = row.resources
            todo = client_todo if row is group else len(row.shards) * bool(client_todo)
            print(f"{row.key:<36} {len(row.shards):>6} {todo:>5} {row.job_kind:<5} {r.cpus_per_task:>4} "
                  f"{r.mem_gb:>4.0f}G {r.gpus_per_node:>4} {row.world_size:>5} {r.time_min:>5}m  "
                  f"{', '.join(row.depends_on) or '-'}")
    shown: set[str] = set()
    for group in groups:  # e.g. the per-GPU memory arithmetic of a training step
        stage = recipe.build_stage(group.step, group.lineage)
        source = stage.input_step()
        upstream = None
        if source is not None:
            lineage = recipe.source_lineage(source, group.lineage) if recipe.has_data(source, group.lineage) else None
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
    ok = _execute(executor, groups, args.wait)
    if executor.blocking:
        from distillery.ops.status import collect_status, render_status
        from distillery.executors import render_timings

        if not ok:  # what is missing, and where; a run that finished says so in its step lines
            print(render_status(collect_status(run, recipe)) + "\n")
        print("wall time per step (this invocation)\n" + render_timings(executor.timings))
        print(f"\n{'finished' if ok else 'FAILED'} in {time.time() - started:.0f}s; outputs: {run.root}  "
              f"logs: {run.root / 'logs'}  table of every shard: distillery status {run.root}")
    elif args.wait is None:
        print(f"follow with: distillery status {run.root}  (or submit with --wait)")
    return 0 if ok else 1


def _execute(executor: Executor, groups: list[TaskGroup], wait_s: float | None) -> bool:
    """Run or submit the groups. A submit prints each job array's id and its tasks' states, and with `wait_s`
    follows them (a line whenever one changes) until they end. Whether nothing failed (so far, without waiting)."""
    from distillery.executors.handles import DONE, PENDING, RUNNING, wait_all

    handles = executor.execute(groups)
    if not executor.blocking:
        print(f"{'group':<36} {'job':<14} {'state':<9} tasks")
        if wait_s is None:
            print("\n".join(str(handle) for handle in handles))
        else:
            wait_all(handles, wait_s, lambda handle: print(f"{handle}  {time.strftime('%H:%M:%S')}", flush=True))
            failed = [handle.key for handle in handles if handle.state() != DONE]
            print(f"FAILED: {', '.join(failed)}" if failed else f"all {len(handles)} job arrays done")
    return all(handle.state() in (PENDING, RUNNING, DONE) for handle in handles)


def cmd_rerun(args: argparse.Namespace) -> int:
    """Run exactly the named shards of one step again, from scratch: their manifests and journals go first."""
    import dataclasses

    from distillery.core.plan import build_groups
    from distillery.executors import build_executor, executor_of_run

    recipe, run = _load(args.target, [])
    groups = [g for g in build_groups(recipe) if g.step == args.step and g.lineage == args.teacher
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
        paths = run.shard(group.step, group.lineage, shard_index, recipe.compress)
        paths.manifest.unlink(missing_ok=True)
        paths.journal.unlink(missing_ok=True)
    executor = build_executor(recipe, run, args.executor)
    ok = _execute(executor, [dataclasses.replace(group, shards=shards, depends_on=[])], args.wait)
    print(f"{'reran' if executor.blocking else 'resubmitted'} {group.key} shards {shards}"
          f"{'' if ok else ' (FAILED: see the shard logs)'}; `distillery resume {run.root}` brings later steps up "
          "to date if their inputs changed")
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from distillery.executors import executor_of_run
    from distillery.ops import status_history
    from distillery.ops.status import collect_status, render_status, status_json
    from distillery.serve.status import render_replicas, replica_rows

    recipe, run = _load(args.target, [])
    executor = executor_of_run(recipe, run)
    while True:
        scheduler_states = executor.states()
        statuses = collect_status(run, recipe, scheduler_states, check_inputs=not args.fast)
        status_history.append(run, statuses)
        written = _status_files(args, run, recipe.name, statuses)
        replicas = replica_rows(run, recipe, scheduler_states)
        if args.json:
            served = [{"group": "serve", "replicas": replicas}] if replicas else []
            print(json.dumps(status_json(statuses) + served, indent=1))
            return 0
        text = render_status(statuses) + render_replicas(replicas)
        if not args.watch:
            print("\n".join([text, *written]))
            return 0
        print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + str(run.root) + "\n" + "\n".join([text, *written]),
              flush=True)
        time.sleep(args.watch)


def _status_files(args: argparse.Namespace, run: RunDir, name: str, statuses: list[GroupStatus]) -> list[str]:
    """Write the metrics file and the status page the flags ask for; one line per file written."""
    written = []
    if args.metrics:
        from distillery.ops.metrics import write_metrics

        write_metrics(Path(args.metrics), name, statuses)
        written.append(f"metrics: {args.metrics}")
    if args.html:
        from distillery.ops import status_history
        from distillery.ops.status_page import write_page

        write_page(Path(args.html), run, name, statuses, status_history.read(run), args.watch)
        written.append(f"status page: {args.html}")
    return written


def cmd_report(args: argparse.Namespace) -> int:
    from distillery.analyze.report import build_report

    page = build_report(Path(args.target), easy=args.easy, hard=args.hard)
    print(f"report: {page}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distillery.ops.exporting import ExportError, export_folder, export_step

    if args.push_to_hub and not args.to_dir:
        print("error: --push-to-hub uploads a folder: export with --to-dir DIR", file=sys.stderr)
        return 2
    recipe, run = _load(args.target, [])
    target = Path(args.to_dir or args.output)
    try:
        if args.to_dir:
            result = export_folder(run, recipe, args.step, args.teacher, args.format, target,
                                   container=args.container or "parquet", limit=args.limit, seed=args.seed)
        else:
            result = export_step(run, recipe, args.step, args.teacher, args.format, target,
                                 container=args.container or "jsonl", limit=args.limit, seed=args.seed)
        if args.push_to_hub:
            from distillery.ops.hub import push_folder

            print(f"pushed to {push_folder(target, args.push_to_hub, private=args.private)}")
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sampled = f" (a sample of {result.total}, seed {args.seed})" if result.written < result.total else ""
    print(f"wrote {result.written} records{sampled} to {target}; dataset card: {result.card}")
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
    from distillery.ops.explain import explain

    known = stage_names()
    for name in [args.stage] if args.stage else known:
        if name not in known:
            print(f"unknown stage {name!r}; stages: {', '.join(known)}", file=sys.stderr)
            return 2
        print(explain(name, stage_type(name)))
    return 0


def cmd_profile_detect(args: argparse.Namespace) -> int:
    from distillery.executors.slurm_detect import draft_profile

    sys.stdout.write(draft_profile())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Verified reasoning-distillation datasets from "
                                     "several teachers, and SFT of a student on them, locally or on SLURM.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="everything on the terminal: debug logging, engines' and libraries' output (by default "
                        "those go to each task's log under <run>/logs/)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, target_help: str = "recipe YAML or run directory") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("target", help=target_help)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. --set num_shards=8 (repeatable)")
        return p

    def add_wait(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--wait", nargs="?", type=float, const=30.0, metavar="SECONDS",
                       help="after a submit, follow the job arrays until they end, showing their states every SECONDS "
                       "(default 30); the exit code says whether every task completed")
        return p

    p = add("plan", "validate a recipe and show the task groups, shard counts, resources and sbatch scripts (dry run)")
    p.add_argument("--sbatch", action="store_true", help="print sbatch scripts even for a local recipe")
    p.add_argument("--no-path-check", action="store_true",
                   help="do not require input paths to exist (planning on a machine without the data mounted)")
    p.add_argument("--cost", action="store_true",
                   help="estimate GPU-hours, shard durations, wall time and disk per step")
    p.add_argument("--cost-inputs", type=Path, metavar="FILE", help="YAML overriding the cost model's inputs")
    p.add_argument("--calibrate", type=Path, metavar="RUN|FILE",
                   help="measure throughputs from a run's manifests, or price the CPU steps at the rates of a "
                        "benchmarks/rehearsal.py --json table (implies --cost)")
    p.add_argument("--nodes", type=int, default=16, metavar="N",
                   help="cluster nodes for the wall-time estimate (default 16)")
    p.set_defaults(func=cmd_plan)
    p = add("run", "run every missing or stale shard with the recipe's executor (local blocks until done)")
    p.add_argument("--executor", choices=EXECUTORS.names(), help="override the recipe's executor")
    p.add_argument("--until", metavar="STEP", help="stop after this step (e.g. run query preparation only)")
    add_wait(p).set_defaults(func=cmd_run)
    add_wait(add("submit", "submit one SLURM job array per step x teacher x phase, with afterok dependencies")
             ).set_defaults(func=lambda a: cmd_run(a, "slurm"), executor=None, until=None)
    add_wait(add("resume", "resubmit (or rerun locally) only missing or stale shards of a run")).set_defaults(
        func=cmd_run, executor=None, until=None)
    p = add("rerun", "run exactly these shards of one step again, from scratch (e.g. after a bad node)",
            "run directory")
    p.add_argument("--step", required=True, help="step name, e.g. generate")
    p.add_argument("--teacher", help="teacher name for per-teacher steps")
    p.add_argument("--shards", help="comma-separated shard indices (default: every shard of the step)")
    p.add_argument("--executor", choices=EXECUTORS.names(), help="override the recipe's executor")
    add_wait(p).set_defaults(func=cmd_rerun)
    p = add("status", "every step x teacher x shard: done, partial, running, pending, failed, stale; counts, ETA")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--fast", action="store_true", help="skip input-digest checks (large runs)")
    p.add_argument("--json", action="store_true", help="print the status as JSON (for dashboards) and exit")
    p.add_argument("--metrics", metavar="FILE", help="also write a Prometheus text file (node-exporter textfile "
                   "collector: name it *.prom), kept current under --watch")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained status page with plots over time "
                   "(from <run>/_status-history.jsonl, which every status call extends); it reloads under --watch")
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
    p.add_argument("--as", dest="container", choices=["jsonl", "parquet"],
                   help="file type (default: jsonl with -o, parquet with --to-dir): JSONL, or Parquet with one "
                   "schema per format (native: typed columns beside the full record; nested values that drift, "
                   "e.g. AM's info, as JSON text)")
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="a seeded uniform sample of N records over every shard (all when the step has fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="output file; its dataset card (README.md) goes beside it")
    where.add_argument("--to-dir", metavar="DIR", help="a folder datasets.load_dataset(DIR) loads: data/ and its card")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the folder (--to-dir) to this Hugging Face dataset "
                   "repo; needs credentials (HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.set_defaults(func=cmd_export)
    p = add("verify", "recompute every shard's sha256 and record count and report shards that do not match their "
            "manifest (truncated or edited since)", "run directory")
    p.add_argument("--invalidate", action="store_true", help="remove the manifests of mismatched shards so that "
                   "`resume` reruns them (and everything made from them)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("explain", help="list stages, or a stage's config fields with their meaning and defaults")
    p.add_argument("stage", nargs="?", help="stage type")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("profile", help="cluster profiles: `profile detect > slurm/profiles/mine.yaml`")
    p.add_subparsers(dest="action", required=True).add_parser(
        "detect", help="draft a cluster profile from sinfo/scontrol; fields SLURM cannot tell are marked "
        "TODO(operator)").set_defaults(func=cmd_profile_detect)
    synth_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_console(args.verbose)
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
