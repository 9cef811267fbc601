#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine for the tests of ray_cluster/ (tests/test_slurm*.py):
# installs Debian's slurm-wlm and munge, writes the configuration, starts munged, slurmctld and slurmd, and waits
# until the node accepts jobs. Idempotent: a second call finds the cluster up and only checks it.
# Needs root; without it, it says so and leaves the machine alone (the Slurm tests then skip with that reason).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup_slurm: not root, no Slurm cluster started (the Slurm tests will skip)" >&2
  exit 0
fi

node=$(hostname -s)
conf=/etc/slurm/slurm.conf

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "setup_slurm: installing slurm-wlm and munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: the key and the daemon (as user munge, which the package created)
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n </dev/null | unmunge >/dev/null

# slurm.conf: this machine as the controller and the only node (its real CPU layout, as slurmd sees it)
if [ ! -f "$conf" ] || ! grep -q "^NodeName=$node " "$conf"; then
  hw=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  mkdir -p /etc/slurm
  cat >"$conf" <<EOF
# one-node test cluster written by .ci/setup_slurm.sh
ClusterName=ci
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to scontrol for 10 minutes; the tests read their state there
MinJobAge=600
KillWait=10
NodeName=$node $hw RealMemory=$mem_mb State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm

if ! scontrol ping 2>/dev/null | grep -q "UP"; then
  slurmctld
fi
if ! scontrol show node "$node" 2>/dev/null | grep -q "State=IDLE\|State=MIXED\|State=ALLOCATED"; then
  pgrep -x slurmd >/dev/null || slurmd
fi

for _ in $(seq 60); do
  if sinfo --noheader --node="$node" --format=%t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    echo "setup_slurm: node $node is up: $(sinfo --noheader --format='%P %D %c %t')" >&2
    exit 0
  fi
  sleep 1
done
echo "setup_slurm: node $node did not become idle; state: $(sinfo --noheader 2>&1)" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
