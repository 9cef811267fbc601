"""What the job script needs to know about a Slurm site: node shape, partition, network naming, limits."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """One kind of Slurm node and the conventions of its site.

    `host_suffix` turns a Slurm node name into the host name of its fast interface (JSC: `jwb0123` ->
    `jwb0123i`, InfiniBand); `socket_ifname` is the interface NCCL and Gloo should use ("" lets them choose).
    `max_time` is the longest job the partition allows ("" when unknown); longer studies resubmit themselves."""

    name: str
    partition: str
    gpus_per_node: int
    cpus_per_node: int
    host_suffix: str = ""
    socket_ifname: str = ""
    node_tmp: str = "/tmp"
    max_time: str = ""
    login_host: str = ""


SITES: dict[str, Site] = {
    # 4x A100 40 GB, 48 cores per node; 24 h per job (develbooster: 2 h, 4 nodes at most)
    "juwels-booster": Site(name="juwels-booster", partition="booster", gpus_per_node=4, cpus_per_node=48,
                           host_suffix="i", socket_ifname="ib0", max_time="24:00:00",
                           login_host="juwels-booster.fz-juelich.de"),
    # any Slurm cluster: the partition, the node shape and the login host come from the command line
    "generic": Site(name="generic", partition="", gpus_per_node=0, cpus_per_node=0),
}

#: the fixed ports of every node (head-only ones marked) and of the MLflow server on the head node;
#: the names are what `--port NAME=N` sets
DEFAULT_PORTS: dict[str, int] = {
    "gcs": 6379,  # head: Ray's address
    "dashboard": 8265,  # head
    "client": 10001,  # head: Ray client server
    "mlflow": 5000,  # head
    "node-manager": 6800,
    "object-manager": 6801,
    "agent-grpc": 6802,
    "agent-http": 52365,
    "runtime-env-agent": 6803,
    "metrics": 6804,
    "min-worker": 10002,
    "max-worker": 10999,
}
