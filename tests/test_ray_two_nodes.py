"""A two-node Ray cluster on one machine, started the way ray_cluster/ starts one on Slurm (`ray start --head` and
`ray start --address`, each with its own temp dir and ports), runs 2-worker training with one worker per node; a
job whose node dies mid-job (its raylet killed) restarts from its last checkpoint on the node that remains.
(Told 127.0.0.1, Ray advertises the machine's own address instead; the two nodes differ by their ports.)"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


#: where the tests' Ray and MLflow ports are drawn from: below the kernel's ephemeral range, whose ports (what binding
#: port 0 gives) any outgoing connection may take as its source port before the node binds them (seen in CI: a
#: raylet that could not start, its node-manager port taken); above the worker port ranges the tests fix (21000-21199,
#: 25000-25199)
PORT_RANGE = (25200, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]))


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports of PORT_RANGE that nothing listens on now (drawn at random: tests that run at once must not
    draw the same ones)."""
    draw, ports = random.Random(), []
    while len(ports) < n:
        port = draw.randrange(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
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
    # no drain before a node stops: it waits for nothing here (it is meant for Ray Serve) and costs 30 s; a node
    # whose raylet died is declared dead after 3 missed health checks 0.5 s apart (15 s by default)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_TWO_NODE_TEST": marker,
           "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3"}
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
        head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
        yield {"dashboard": f"http://127.0.0.1:{head_ports[1]}", "nodes": [n["NodeID"] for n in ray.nodes()],
               "head": head, "worker_temp_dir": temp_dirs[1]}
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


def _raylet_of(temp_dir: str) -> psutil.Process:
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "raylet" and any(temp_dir in arg for arg in proc.info["cmdline"] or []):
            return proc
    raise AssertionError(f"no raylet runs with temp dir {temp_dir}")


def test_a_job_whose_node_dies_restarts_from_its_checkpoint_on_the_other(cluster, tmp_path):
    """Runs last in this module: it leaves the cluster with the head node alone."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    target = prepare_shards(open_dataset("synthetic-covidx", size=96, test_size=32, image_size=RESOLUTION),
                            Preprocess(resolution=RESOLUTION), tmp_path / "shards")
    spec = _spec(target, "scratch", 60, eval_every=10)
    # the head's one CPU is held, so the job's one worker goes to the other node; it is let go before that node
    # dies, so the restarted worker has somewhere to go
    hold = placement_group([{"CPU": 1, "node:__internal_head__": 0.001}])
    ray.get(hold.ready(), timeout=60)
    raylet = _raylet_of(cluster["worker_temp_dir"])
    earlier = {w["actor_id"] for w in _train_workers(cluster)}
    killed: dict = {}

    def kill_the_node_after_a_checkpoint() -> None:
        # once Train's controller has registered a checkpoint (it writes its snapshot then): a checkpoint folder
        # alone is not enough, the worker writes it before the controller collects its report, and a node that
        # dies in between restarts the job from step 0
        deadline = time.time() + 240
        while time.time() < deadline and not _registered_checkpoint(tmp_path / "runs" / "dies"):
            time.sleep(0.2)
        remove_placement_group(hold)
        raylet.kill()  # SIGKILL
        killed["at"] = time.time()

    watcher = threading.Thread(target=kill_the_node_after_a_checkpoint)
    watcher.start()
    result = run_job(spec, name="dies", storage_path=tmp_path / "runs", resources=ResourcesConfig(num_workers=1))
    watcher.join()
    assert "at" in killed and not raylet.is_running()
    assert result.error is None and result.metrics["step"] == 60
    # the attempt that finished began after the node died, from a checkpoint (not from step 0), on the head
    assert result.metrics["first_step_at"] > killed["at"] and result.metrics["start_step"] >= 10
    assert [n["Alive"] for n in ray.nodes() if n["NodeID"] != cluster["head"]] == [False]
    # this job's workers: the first one on the node that died, the second one on the head
    workers = [w for w in _train_workers(cluster) if w["actor_id"] not in earlier]
    assert sorted(w["node_id"] == cluster["head"] for w in workers) == [False, True]

    clean = run_job(spec, name="clean", storage_path=tmp_path / "runs", resources=ResourcesConfig(num_workers=1))
    assert result.metrics["val_nll"] == pytest.approx(clean.metrics["val_nll"], rel=1e-4)


def _registered_checkpoint(run_dir: Path) -> bool:
    """Whether Train's checkpoint manager holds a checkpoint of this run (what a restarted worker resumes from)."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    try:
        snapshot = json.loads((run_dir / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or being written
        return False
    return snapshot.get("latest_checkpoint_result") is not None


def _train_workers(cluster) -> list[dict]:
    from ray.util.state import list_actors

    return list_actors(address=cluster["dashboard"], filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                       limit=100)

