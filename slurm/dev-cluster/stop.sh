#!/usr/bin/env bash
# Stop the single-node cluster that start.sh started, by the pids in its state directory.
# `stop.sh --purge` also deletes the state directory (job history, accounting database, keys).
set -euo pipefail

STATE=${DISTILLERY_SLURM_STATE:-/tmp/distillery-slurm}
[ -d "$STATE" ] || { echo "[dev-cluster] nothing to stop: $STATE does not exist" >&2; exit 0; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait up to 15 s, then KILL
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.3
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
        fi
        echo "[dev-cluster] stopped $name ($pid)" >&2
    fi
    rm -f "$pidfile"
}

# Cancel this cluster's jobs first, so no task outlives slurmd; then stop in reverse order of start.
if [ -s "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=$STATE/etc/slurm.conf
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        # shellcheck disable=SC2086  # one argument per job id
        scancel $jobs || true
        for _ in $(seq 30); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.5
        done
        echo "[dev-cluster] cancelled jobs: $jobs" >&2
    fi
fi
stop_pidfile slurmd "$STATE/run/slurmd.pid"
stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
stop_pidfile mariadbd "$STATE/run/mariadb.pid"
stop_pidfile munged "$STATE/munge/munged.pid"

if [ "${1:-}" = "--purge" ]; then
    rm -rf "$STATE"
    echo "[dev-cluster] removed $STATE" >&2
fi
