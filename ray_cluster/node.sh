#!/bin/bash
# One Ray node of a ray_cluster job, started by srun on its node (one task per node): `node.sh head|worker`.
# Starts the node with the job's fixed ports, keeps it up until the job script creates $JOB_DIR/stop, then stops it
# (SIGTERM to `ray start --block` stops every process of the node), copies its logs to the study directory and
# removes its node-local temp dir. Settings come from the job script's environment (juwels_booster.sbatch).
set -uo pipefail
role=$1
node=$SLURMD_NODENAME
host=$node$HOST_SUFFIX
log() { echo "[$(date +%H:%M:%S) ray_cluster $role $node] $*"; }

ip=$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')
if [ -z "$ip" ]; then
  log "ERROR: cannot resolve $host (Slurm node $node + HOST_SUFFIX '$HOST_SUFFIX')"
  exit 1
fi
ports=(node-manager="$PORT_NODE_MANAGER" object-manager="$PORT_OBJECT_MANAGER" agent-grpc="$PORT_AGENT_GRPC"
       agent-http="$PORT_AGENT_HTTP" runtime-env-agent="$PORT_RUNTIME_ENV_AGENT" metrics="$PORT_METRICS")
tmp=$NODE_TMP/r$SLURM_JOB_ID
args=(--block --node-ip-address="$ip" --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS_PER_NODE"
      --temp-dir="$tmp" --disable-usage-stats
      --node-manager-port="$PORT_NODE_MANAGER" --object-manager-port="$PORT_OBJECT_MANAGER"
      --dashboard-agent-grpc-port="$PORT_AGENT_GRPC" --dashboard-agent-listen-port="$PORT_AGENT_HTTP"
      --runtime-env-agent-port="$PORT_RUNTIME_ENV_AGENT" --metrics-export-port="$PORT_METRICS"
      --min-worker-port="$PORT_MIN_WORKER" --max-worker-port="$PORT_MAX_WORKER")
if [ "$role" = head ]; then
  ports+=(gcs="$PORT_GCS" dashboard="$PORT_DASHBOARD" client="$PORT_CLIENT")
  args+=(--head --port="$PORT_GCS" --include-dashboard=true --dashboard-host=0.0.0.0
         --dashboard-port="$PORT_DASHBOARD" --ray-client-server-port="$PORT_CLIENT")
else
  args+=(--address="$HEAD_IP:$PORT_GCS")
fi
"$PYTHON" -m ray_cluster check-ports --node "$node" "${ports[@]}" || exit 1

log "starting Ray ($ip, $SLURM_CPUS_PER_TASK CPUs, $GPUS_PER_NODE GPUs, temp dir $tmp)"
"$PYTHON" -m ray.scripts.scripts start "${args[@]}" &
ray_pid=$!
while kill -0 "$ray_pid" 2>/dev/null && [ ! -e "$JOB_DIR/stop" ]; do sleep 1; done
if kill -0 "$ray_pid" 2>/dev/null; then
  kill -TERM "$ray_pid"
  wait "$ray_pid"
  rc=0
else
  wait "$ray_pid"
  rc=$?
  log "ERROR: the Ray node ended by itself with exit code $rc"
  rc=1
fi
# `ray start` leads a process group of its own and every Ray process of the node is in it; one orphaned by its
# parent's exit (seen: the dashboard's multiprocessing forkserver) is not stopped with the node and, where Slurm
# tracks a job's processes by parentage instead of cgroups, would outlive the job
kill -KILL -- "-$ray_pid" 2>/dev/null
mkdir -p "$JOB_DIR/ray-logs/$node"
cp -r "$tmp"/session_latest/logs/. "$JOB_DIR/ray-logs/$node/" 2>/dev/null
rm -rf "$tmp"
log "stopped"
exit "$rc"
