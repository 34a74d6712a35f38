#!/usr/bin/env bash
# Stops the daemons .ci/slurm/start.sh started (slurmd, slurmctld, slurmdbd, MariaDB, munged), each by
# the pid in its pid file. Configuration, accounting database and job history stay for the next start.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "slurm stop: must run as root: sudo bash $0" >&2; exit 1; }
for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/slurm/slurmdbd.pid \
               /run/mysqld/mysqld.pid /run/munge/munged.pid; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || continue
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && echo "slurm stop: $pidfile ($pid) still running after 30 s" >&2
done
exit 0
