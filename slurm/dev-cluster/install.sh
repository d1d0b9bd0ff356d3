#!/usr/bin/env bash
# Install the Debian packages the single-node development cluster needs (start.sh). Needs root.
# munge + slurmctld/slurmd/slurmdbd + clients, MariaDB for accounting (sacct), libpmix2 and the pmi2 plugin
# shipped with slurmd for MPI jobs. Nothing is started on install here (no systemd); start.sh does that.
set -euo pipefail

PACKAGES=(munge slurmctld slurmd slurmdbd slurm-wlm-mysql-plugin slurm-client libpmix2 mariadb-server mariadb-client)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "[dev-cluster] packages already installed" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
