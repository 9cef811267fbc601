"""A two-node Ray cluster on one machine, started the way ray_cluster/ starts one on Slurm (`ray start --head` and
`ray start --address`, each with its own temp dir and ports), runs 2-worker training with one worker per node.
(Told 127.0.0.1, Ray advertises the machine's own address instead; the two nodes differ by their ports.)"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from scaling.config import ResourcesConfig
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, prepare_shards
from scaling.train.job import run_job
from test_train_job import RESOLUTION, _spec

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
#: ports each node needs for itself; two nodes on one machine must not share any of them
NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_args(temp_dir: str, ports: list[int], worker_ports: tuple[int, int]) -> list[str]:
    args = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
            "--temp-dir", temp_dir, "--disable-usage-stats",
            "--min-worker-port", str(worker_ports[0]), "--max-worker-port", str(worker_ports[1])]
    for name, port in zip(NODE_PORTS, ports):
        args += [f"--{name}", str(port)]
    return args


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the Ray head did not listen on port {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def _processes_with(marker: str) -> list[psutil.Process]:
    """Every process started by this cluster: they all inherit the marker variable, workers included."""
    found = []
    for proc in psutil.process_iter():
        try:
            # a zombie has exited already; it only waits for its parent to read its status
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("RAY_TWO_NODE_TEST") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    logs = tmp_path_factory.mktemp("ray_nodes")
    marker = uuid.uuid4().hex
    # no drain before a node stops: it waits for nothing here (it is meant for Ray Serve) and costs 30 s
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_TWO_NODE_TEST": marker}
    ports = _free_ports(len(HEAD_PORTS) + 2 * len(NODE_PORTS))
    head_ports, node_ports = ports[:len(HEAD_PORTS)], ports[len(HEAD_PORTS):]
    gcs = head_ports[0]
    # short temp dirs: Ray's Unix socket paths must stay under 107 bytes
    temp_dirs = [tempfile.mkdtemp(prefix="rA", dir="/tmp"), tempfile.mkdtemp(prefix="rB", dir="/tmp")]
    head_cmd = [RAY, "start", "--head", *_node_args(temp_dirs[0], node_ports[:len(NODE_PORTS)], (21000, 21099))]
    for name, port in zip(HEAD_PORTS, head_ports):
        head_cmd += [f"--{name}", str(port)]
    worker_cmd = [RAY, "start", "--address", f"127.0.0.1:{gcs}",
                  *_node_args(temp_dirs[1], node_ports[len(NODE_PORTS):], (21100, 21199))]
    procs: list[subprocess.Popen] = []
    try:
        for name, cmd in (("head", head_cmd), ("worker", worker_cmd)):
            log = logs / f"{name}.log"
            procs.append(subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
            if name == "head":
                _wait_for_port(gcs, procs[0], log)
        ray.init(address=f"127.0.0.1:{gcs}", log_to_driver=False)
        deadline = time.time() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.time() > deadline:
                pytest.fail(f"the second node did not join:\n{(logs / 'worker.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"dashboard": f"http://127.0.0.1:{head_ports[1]}", "nodes": [n["NodeID"] for n in ray.nodes()]}
    finally:
        ray.shutdown()
        # SIGTERM makes `ray start --block` stop its node's processes gracefully; the worker node first
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        # workers notice their raylet is gone and exit on their own, give them a moment
        psutil.wait_procs(_processes_with(marker), timeout=30)
        leftovers = _processes_with(marker)
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not leftovers, f"Ray processes left behind after stopping both nodes: {[p.pid for p in leftovers]}"


def test_a_real_training_job_spans_both_nodes(cluster, tmp_path):
    from ray.util.state import list_actors

    target = prepare_shards(open_dataset("synthetic-covidx", size=96, test_size=32, image_size=RESOLUTION),
                            Preprocess(resolution=RESOLUTION), tmp_path / "shards")
    result = run_job(_spec(target, "scratch", 6), name="across", storage_path=tmp_path / "runs",
                     resources=ResourcesConfig(num_workers=2))
    assert result.error is None and result.metrics["step"] == 6
    # the job's two Train workers (finished actors stay listed) ran one on each node
    workers = list_actors(address=cluster["dashboard"], filters=[("class_name", "=", "RayTrainWorker")],
                          detail=True, limit=100)
    assert len(workers) == 2
    assert {w["node_id"] for w in workers} == set(cluster["nodes"])
