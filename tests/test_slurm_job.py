"""ray_cluster without Slurm: the rendered job script, the submit command's refusals, the config-versus-
allocation check, and the checks the job runs while its cluster starts (ports, an unreachable head)."""
from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_cluster import SITES, Allocation, AllocationError, JobRequest, check_allocation, parse_time, render_job
from ray_cluster.__main__ import main as cli
from ray_cluster.in_job import StartupError, check_ports, wait_for
from ray_cluster.job_script import check_time
from scaling.config import ResourcesConfig, SweepConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "studies" / "configs" / "smoke.yaml"


def _request(tmp_path, site="juwels-booster", **kw) -> JobRequest:
    base = dict(config=tmp_path / "c.yaml", study_dir=tmp_path / "study", project_root=PROJECT_ROOT, nodes=4,
                time="24:00:00", account="hai_xray", site=SITES[site] if isinstance(site, str) else site,
                overrides=("sweep.seeds=[0, 1]",))
    return JobRequest(**{**base, **kw})


def _directives(script: str) -> dict[str, str | None]:
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, re.M)
    return {name: value or None for name, value in found}


def _setting(script: str, name: str) -> str:
    return re.search(rf"^{name}=(.*?)(  # .*)?$", script, re.M).group(1)


def test_juwels_script_asks_for_booster_nodes_and_wires_the_infiniband_names(tmp_path):
    script = render_job(_request(tmp_path))
    d = _directives(script)
    assert d["partition"] == "booster" and d["gres"] == "gpu:4" and d["nodes"] == "4"
    assert d["account"] == "hai_xray" and d["time"] == "24:00:00" and d["signal"] == "B:USR1@600"
    assert d["ntasks-per-node"] == "1" and d["cpus-per-task"] == "48"
    assert d["output"] == f"{tmp_path}/study/slurm/%j.out"
    assert _setting(script, "HOST_SUFFIX") == "i" and _setting(script, "SOCKET_IFNAME") == "ib0"
    assert _setting(script, "GPUS_PER_NODE") == "4" and _setting(script, "PORT_GCS") == "6379"
    # overrides survive shell quoting as one word each
    assert _setting(script, "STUDY_OVERRIDES") == "('sweep.seeds=[0, 1]')"
    # the body passes the Slurm and JSC settings on to Ray, NCCL and srun
    for needle in ("SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK", "NCCL_SOCKET_IFNAME=$SOCKET_IFNAME",
                   "GLOO_SOCKET_IFNAME=$SOCKET_IFNAME", "RAY_AUTH_MODE=token", "--allowed-hosts",
                   '--dependency="afterany:$job"'):
        assert needle in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_generic_site_drops_gpus_partition_and_suffix(tmp_path):
    site = dataclasses.replace(SITES["generic"], cpus_per_node=2)
    script = render_job(_request(tmp_path, site=site, nodes=1, time="10", ray_auth="disabled",
                                 study_cmd=("python", "my study.py"), ports={"mlflow": 5050}))
    d = _directives(script)
    assert "gres" not in d and "partition" not in d and d["cpus-per-task"] == "2" and d["time"] == "10"
    assert _setting(script, "HOST_SUFFIX") == "''" and _setting(script, "GPUS_PER_NODE") == "0"
    assert _setting(script, "STUDY_CMD") == "(python 'my study.py')"
    assert _setting(script, "PORT_MLFLOW") == "5050" and _setting(script, "PORT_GCS") == "6379"
    assert _setting(script, "RAY_AUTH") == "disabled"
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_template_alone_refuses_to_run(tmp_path):
    proc = subprocess.run(["bash", str(PROJECT_ROOT / "ray_cluster" / "juwels_booster.sbatch")],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "python -m ray_cluster submit" in proc.stderr


@pytest.mark.parametrize("text, seconds", [("90", 5400), ("2:30", 150), ("1:00:00", 3600), ("1-0", 86400),
                                           ("1-02:03", 93780), ("0-00:00:10", 10)])
def test_slurm_time_formats(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("time, message", [("48:00:00", "exceeds the 24:00:00 limit"), ("5", "leaves no time"),
                                           ("1 day", "expected a Slurm time limit")])
def test_time_limits_that_cannot_work(tmp_path, time, message):
    with pytest.raises(ValueError, match=message):
        check_time(_request(tmp_path, time=time))


def test_submit_without_account_says_how_to_give_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    code = cli(["submit", "--config", str(SMOKE), "--nodes", "1", "--time", "1:00:00", "--out", str(tmp_path)])
    assert code == 2
    assert "no account given: pass --account" in capsys.readouterr().err
    assert not (tmp_path / "slurm").exists()


def test_submit_refuses_a_gpu_config_on_nodes_without_gpus(tmp_path, capsys):
    code = cli(["submit", "--config", str(SMOKE), "--nodes", "1", "--time", "1:00:00", "--account", "x",
                "--site", "generic", "--cpus-per-node", "8", "--out", str(tmp_path), "resources.use_gpu=true"])
    assert code == 2
    assert "resources.use_gpu is true but 1 node(s) of generic has no GPUs" in capsys.readouterr().err


def test_submit_reports_a_bad_config_key(tmp_path, capsys):
    code = cli(["submit", "--config", str(SMOKE), "--nodes", "1", "--time", "1:00:00", "--account", "x",
                "--out", str(tmp_path), "resources.num_gpus=4"])
    assert code == 2 and "resources.num_gpus: unknown key" in capsys.readouterr().err


def test_dry_run_writes_the_script_and_a_copy_of_the_config(tmp_path, capsys):
    code = cli(["submit", "--config", str(SMOKE), "--nodes", "2", "--time", "2:00:00", "--account", "x",
                "--partition", "develbooster", "--out", str(tmp_path), "--dry-run", "resources.use_gpu=true"])
    assert code == 0, capsys.readouterr().err
    script = (tmp_path / "slurm" / "job.sbatch").read_text()
    assert _directives(script)["partition"] == "develbooster"
    assert _setting(script, "STUDY_CONFIG") == str(tmp_path / "slurm" / "config.yaml")
    assert (tmp_path / "slurm" / "config.yaml").read_text() == SMOKE.read_text()


def _alloc(nodes=2, gpus=4, cpus=48):
    return Allocation(nodes, gpus, cpus, "the allocation")


def test_gpu_workers_of_all_concurrent_trials_must_fit():
    res = ResourcesConfig(num_workers=4, use_gpu=True, gpus_per_worker=1)
    assert check_allocation(res, SweepConfig(max_concurrent_trials=2), _alloc()) == []
    with pytest.raises(AllocationError, match=r"= 12 Train workers at once .* hold 8 such workers.* ask for 3 nodes"):
        check_allocation(res, SweepConfig(max_concurrent_trials=3), _alloc())


def test_a_worker_cannot_have_more_gpus_than_a_node():
    res = ResourcesConfig(num_workers=1, use_gpu=True, gpus_per_worker=8)
    with pytest.raises(AllocationError, match="gpus_per_worker is 8 but a node of the allocation has 4 GPUs"):
        check_allocation(res, SweepConfig(), _alloc())


def test_cpu_only_config_on_gpu_nodes_warns_and_too_many_cpus_fail():
    warnings = check_allocation(ResourcesConfig(num_workers=2), SweepConfig(max_concurrent_trials=2), _alloc(1, 4, 2))
    assert any("stay idle" in w for w in warnings) and any("fewer trials will run at once" in w for w in warnings)
    with pytest.raises(AllocationError, match="does not fit"):
        check_allocation(ResourcesConfig(num_workers=3, cpus_per_worker=2), SweepConfig(), _alloc(1, 0, 4))


def test_a_taken_port_is_named_with_the_option_that_moves_it():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StartupError, match=rf"on node n1: mlflow {port} .* --port mlflow=N"):
            check_ports("n1", {"mlflow": port})


def test_unreachable_head_fails_after_the_timeout_with_its_log(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "node-n1.out"
    log.write_text("ray start: something went wrong\n")
    with pytest.raises(StartupError, match=rf"(?s)the Ray head is unreachable: 127.0.0.1:{port} .*went wrong"):
        wait_for(f"127.0.0.1:{port}", "the Ray head", 2, logs=[str(tmp_path / "node-*.out")])


def test_a_head_step_that_ended_fails_the_wait_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    started = time.time()
    with pytest.raises(StartupError, match="the Ray head stopped before"):
        wait_for("127.0.0.1:9", "the Ray head", 60, watch=[proc.pid])
    assert time.time() - started < 10


def _running(monkeypatch, states: dict[str, str]):
    from ray_cluster import study_jobs
    from ray_cluster.slurm import JobState

    monkeypatch.setattr(study_jobs, "job_states",
                        lambda ids: {j: JobState(j, states[j], "1:00", "jwb0001") for j in ids if j in states})


def test_status_of_a_running_study_shows_the_tunnel_to_its_dashboards(tmp_path, monkeypatch):
    slurm = tmp_path / "slurm"
    slurm.mkdir()
    (slurm / "jobs.tsv").write_text("101\t1\t2026-01-01T00:00:00+01:00\tsubmitted\n"
                                    "102\t2\t2026-01-02T00:00:00+01:00\tresubmitted by 101\n")
    (slurm / "cluster.env").write_text("JOB_ID=102\nHEAD_NODE=jwb0001\nHEAD_HOST=jwb0001i\nHEAD_IP=10.13.0.1\n"
                                       "PORT_GCS=6379\nPORT_DASHBOARD=8265\nPORT_MLFLOW=5000\n"
                                       "LOGIN_HOST=juwels-booster.fz-juelich.de\n")
    _running(monkeypatch, {"101": "COMPLETED", "102": "RUNNING"})
    from ray_cluster.study_jobs import study_status

    text = study_status(tmp_path)
    assert "in progress: job 102 is RUNNING" in text
    assert "ssh -N -L 8265:jwb0001i:8265 -L 5000:jwb0001i:5000 <user>@juwels-booster.fz-juelich.de" in text
    (tmp_path / "summary.json").write_text("{}")
    _running(monkeypatch, {"101": "COMPLETED", "102": "COMPLETED"})
    text = study_status(tmp_path)
    assert "state  completed" in text and "ssh" not in text


def test_a_study_with_a_job_in_the_queue_is_not_submitted_twice(tmp_path, monkeypatch, capsys):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.tsv").write_text("101\t1\t2026-01-01T00:00:00+01:00\tsubmitted\n")
    _running(monkeypatch, {"101": "PENDING"})
    code = cli(["submit", "--config", str(SMOKE), "--nodes", "1", "--time", "1:00:00", "--account", "x",
                "--site", "generic", "--cpus-per-node", "4", "--out", str(tmp_path)])
    assert code == 1
    assert "already has job(s) 101 (PENDING)" in capsys.readouterr().err
    assert not (tmp_path / "slurm" / "job.sbatch").exists()
