#!/usr/bin/env bash
# Start a single-node Slurm cluster with accounting on this machine (for `--executor slurm` and its tests).
#
# Installs Debian's slurm-wlm (slurmctld, slurmd, client), munge, slurmdbd and MariaDB when missing, writes
# /etc/slurm/{slurm,slurmdbd}.conf for this host (its CPUs and memory), and starts the daemons in the order that
# works without systemd: munged, MariaDB, slurmdbd (port 6819), slurmctld, slurmd. Then waits until `sinfo` shows
# the node idle and `sacct -n` answers. Idempotent: when the cluster already answers it starts nothing and returns.
# Needs root. Facts behind each setting: ../shared/SLURM.md (accounting keeps a cancelled job from hanging its
# caller; KillWait=5 frees a cancelled job's CPUs quickly; no cgroups: linuxproc, task/none).
set -euo pipefail

log() { echo "start_slurm: $*"; }
answers() { timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
  && timeout 5 sacct -n >/dev/null 2>&1; }

if command -v sinfo >/dev/null 2>&1 && answers; then
  log "Slurm already answers"; exit 0
fi
[ "$(id -u)" = 0 ] || { log "must run as root (installs packages, starts daemons)" >&2; exit 1; }

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
   || ! command -v slurmdbd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 \
   || ! command -v mariadbd >/dev/null 2>&1 || ! command -v sinfo >/dev/null 2>&1; then
  log "installing slurm-wlm, munge, slurmdbd, mariadb-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=probseg
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
MailProg=/bin/true
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what="$1" secs="$2"; shift 2
  for _ in $(seq "$((secs * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "$what did not come up within ${secs} s" >&2; return 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# munge: the key is created by the package's postinst; /run/munge is systemd's job elsewhere.
install -d -o munge -g munge -m 0755 /run/munge
[ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || \
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; \
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if ! running /run/munge/munged.pid; then
  log "starting munged"; su -s /bin/sh munge -c /usr/sbin/munged
fi
wait_for munged 10 munge -n

install -d -o mysql -g mysql -m 0755 /run/mysqld
if ! [ -S /run/mysqld/mysqld.sock ] || ! mariadb-admin ping >/dev/null 2>&1; then
  log "starting MariaDB"
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  # detached in its own session, with no descriptor of ours: a caller reading our output (a pipe) is not held open
  (cd / && setsid -f mariadbd-safe --user=mysql </dev/null >/dev/null 2>&1)
fi
wait_for MariaDB 30 mariadb-admin ping

if ! running /run/slurm/slurmdbd.pid; then log "starting slurmdbd"; slurmdbd; fi
wait_for "slurmdbd (port 6819)" 30 port_open 6819

if ! running /run/slurm/slurmctld.pid; then log "starting slurmctld"; slurmctld; fi
wait_for "slurmctld" 30 scontrol ping
if ! running /run/slurm/slurmd.pid; then log "starting slurmd"; slurmd; fi

node_idle() { sinfo -h -n "$HOST" -o '%T' | grep -qE '^(idle|mixed|allocated)'; }
wait_for "node $HOST (idle in sinfo)" 60 node_idle
wait_for "sacct" 30 sacct -n
log "Slurm is up: node $HOST, $CPUS CPUs, ${MEM_MB} MB"
