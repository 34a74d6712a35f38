#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm.py and for trying
# workflow/profiles/slurm on a laptop (docs/pipeline.md, "A one-node Slurm cluster").
#
#   sudo bash .ci/slurm/start.sh     # idempotent: installs what is missing, starts what is not running
#   sudo bash .ci/slurm/stop.sh      # stops the daemons it started (configuration and job history stay)
#
# What it sets up (Debian/Ubuntu packages, no systemd needed):
#   munge          authentication between the Slurm daemons and commands
#   MariaDB        the accounting database, local socket only
#   slurmdbd       job accounting, so that `sacct` answers: snakemake-executor-plugin-slurm asks
#                  `sacct` for the state of its jobs (and `sacctmgr` for the account it is given)
#   slurmctld      cluster "tas", partitions "cpu" (default) and "gpu", both on this one node
#   slurmd         this host as node, with its real cores and memory (`slurmd -C`) and its NVIDIA GPUs,
#                  or on a machine without any, TAS_SLURM_GPUS (default 2) stand-in GPUs: device files
#                  /var/lib/tas-slurm/gpu<i> (like /dev/null), so jobs that ask for `--gpus=N` are
#                  scheduled, get CUDA_VISIBLE_DEVICES and are accounted (sacct's AllocTRES shows
#                  gres/gpu=N); tas then runs them on the CPU
#   account "tas"  for root and for the user who called sudo (sacctmgr)
# Then it waits until `sinfo` shows the node idle (or busy with jobs).
set -euo pipefail

fail() { echo "slurm start: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages, writes /etc/slurm and starts daemons): sudo bash $0"

CLUSTER=tas
ACCOUNT=tas
GPUS=${TAS_SLURM_GPUS:-2}
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || fail "TAS_SLURM_GPUS=$GPUS: expected the number of stand-in GPUs, a whole number above 0"
DB_PASS=${TAS_SLURM_DB_PASS:-tas-slurmdbd}
HOST=$(hostname -s)
LOG=/var/log/slurm
ETC=/etc/slurm

# --- packages --------------------------------------------------------------------------------
need=()
for cmd in munged:munge slurmctld:slurmctld slurmd:slurmd slurmdbd:slurmdbd sinfo:slurm-client \
           mariadbd:mariadb-server mariadb:mariadb-client; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "slurm start: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
        || fail "apt-get install ${need[*]} failed"
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }   # pid file of a live process

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    fail "$what did not come up within $limit s (logs: $LOG/, /var/log/munge/, /var/log/mysql/)"
}

install -d -o slurm -g slurm -m 755 "$LOG" /var/spool/slurmctld /run/slurm
install -d -m 755 "$ETC" /var/spool/slurmd

# --- munge -----------------------------------------------------------------------------------
install -d -o munge -g munge -m 700 /etc/munge /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! running /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi
wait_for 20 munged bash -c 'munge -n | unmunge'

# --- MariaDB (accounting database) ---------------------------------------------------------------
install -d -o mysql -g mysql -m 755 /run/mysqld /var/log/mysql
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! running /run/mysqld/mysqld.pid; then
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
        --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --skip-networking=0 \
        --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1 &
fi
wait_for 60 MariaDB mariadb -e 'select 1'
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- configuration ---------------------------------------------------------------------------
# This host's cores and memory as slurmd sees them, e.g. "CPUs=2 Boards=1 ... RealMemory=24105".
NODE=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
cat > "$ETC/slurm.conf" <<EOF
# Written by .ci/slurm/start.sh: a one-node test cluster. Real clusters: ask your administrators.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups (containers and CI machines rarely delegate them): processes are tracked by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Job accounting through slurmdbd: sacct answers for finished jobs, with their TRES (cpu, mem, gpus).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
# Keep sbatch --comment (the plugin writes the rule and wildcards there) in sacct's Comment field.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# Finished jobs stay visible to squeue/scontrol for 10 minutes as well.
MinJobAge=600
KillWait=10
NodeName=$HOST $NODE Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
# GPUs: this machine's NVIDIA GPUs (/dev/nvidia0, ...) when it has some; else GPUS stand-ins. Slurm's
# gpu GRES wants one device file per GPU (a count alone registers as 0 GPUs and drains the node); the
# stand-ins are character devices like /dev/null, or plain files where mknod is not allowed (slurmd
# then logs "not a valid character or block device" but still counts them).
shopt -s nullglob; nvidia=(/dev/nvidia[0-9]*); shopt -u nullglob
if [ ${#nvidia[@]} -gt 0 ]; then
    GPUS=${#nvidia[@]}
    echo "NodeName=$HOST Name=gpu File=/dev/nvidia[0-$((GPUS - 1))]" > "$ETC/gres.conf"
else
    install -d -m 755 /var/lib/tas-slurm
    for i in $(seq 0 $((GPUS - 1))); do
        dev=/var/lib/tas-slurm/gpu$i
        [ -e "$dev" ] || mknod -m 666 "$dev" c 1 3 2>/dev/null || touch "$dev"
    done
    echo "NodeName=$HOST Name=gpu File=/var/lib/tas-slurm/gpu[0-$((GPUS - 1))]" > "$ETC/gres.conf"
fi
cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
chown slurm:slurm "$ETC/slurmdbd.conf" && chmod 600 "$ETC/slurmdbd.conf"
chmod 644 "$ETC/slurm.conf" "$ETC/gres.conf"

# --- daemons ---------------------------------------------------------------------------------
running /run/slurm/slurmdbd.pid || /usr/sbin/slurmdbd
wait_for 60 slurmdbd sacctmgr -n list cluster
if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i -Q add cluster "$CLUSTER"
fi
if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="tas pipeline" Organization=tas
fi
for user in root ${SUDO_USER:-}; do
    if [ -z "$(sacctmgr -n -P list association user="$user" account="$ACCOUNT" format=user)" ]; then
        sacctmgr -i -Q add user "$user" Account="$ACCOUNT" Cluster="$CLUSTER"
    fi
done

if running /run/slurm/slurmctld.pid; then scontrol reconfigure; else /usr/sbin/slurmctld; fi
wait_for 60 slurmctld scontrol ping
running /run/slurm/slurmd.pid || /usr/sbin/slurmd
node_ready() { sinfo -h -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated)$'; }
for i in $(seq 60); do
    node_ready && break
    # A node left down or drained (a reboot, an earlier configuration) is taken back once slurmd runs.
    if [ "$i" = 10 ]; then scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true; fi
    sleep 1
done
node_ready || fail "node $HOST is not ready after 60 s: $(sinfo -h -n "$HOST" -o '%T %E') (logs: $LOG/slurmd.log, $LOG/slurmctld.log)"
sinfo
