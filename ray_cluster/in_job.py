"""Checks the job script runs on its nodes while the cluster starts (`python -m ray_cluster check-ports |
wait-for | wait-nodes`): each either passes or stops the job with one message that says what is wrong."""
from __future__ import annotations

import errno
import glob
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path


class StartupError(RuntimeError):
    """The cluster cannot come up; the message names the part and shows its log."""


def taken_ports(ports: dict[str, int]) -> dict[str, int]:
    """The ports of `ports` (name -> port) that some process already holds on this machine."""
    taken = {}
    for name, port in ports.items():
        with socket.socket() as s:
            # servers bind with SO_REUSEADDR: connections lingering in TIME_WAIT do not block them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                taken[name] = port
    return taken


def check_ports(node: str, ports: dict[str, int]) -> None:
    """StartupError naming every taken port and the option that moves it."""
    taken = taken_ports(ports)
    if taken:
        listed = ", ".join(f"{name} {port}" for name, port in taken.items())
        moves = " ".join(f"--port {name}=N" for name in taken)
        raise StartupError(f"port(s) already in use on node {node}: {listed} (another job or service holds them); "
                           f"submit again with other ports: {moves}")


def wait_for(target: str, what: str, timeout: float, watch: list[int] = (), logs: list[str] = ()) -> None:
    """Wait until `target` answers: `host:port` accepts a TCP connection, or an http URL returns 200.

    Fails early when a watched process (the step that should bring `target` up) has ended."""
    deadline = time.time() + timeout
    while not _answers(target):
        for pid in watch:
            if not alive(pid):
                raise StartupError(f"{what} stopped before {target} answered{_tails(logs)}")
        if time.time() > deadline:
            raise StartupError(f"{what} is unreachable: {target} did not answer within {timeout:g} s{_tails(logs)}")
        time.sleep(1)


def wait_for_nodes(address: str, count: int, timeout: float, watch: list[int] = (), logs: list[str] = ()):
    """Wait until `count` Ray nodes are alive in the cluster at `address`; return the alive nodes (ray.nodes())."""
    deadline = time.time() + timeout
    wait_for(address, "the Ray head", timeout, watch, logs)
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        while True:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            if len(nodes) >= count:
                return nodes
            for pid in watch:
                if not alive(pid):
                    raise StartupError(f"a Ray node step ended while waiting for the nodes to join "
                                       f"({len(nodes)} of {count} joined){_tails(logs)}")
            if time.time() > deadline:
                joined = ", ".join(sorted(n["NodeManagerAddress"] for n in nodes))
                raise StartupError(f"only {len(nodes)} of {count} Ray nodes joined within {timeout:g} s "
                                   f"(joined: {joined}){_tails(logs)}")
            time.sleep(1)
    finally:
        ray.shutdown()


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has ended: only its parent has not collected it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _answers(target: str) -> bool:
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
    host, _, port = target.rpartition(":")
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((host, int(port))) == 0


def _tails(patterns, lines: int = 15) -> str:
    parts = []
    for path in sorted({p for pattern in patterns for p in glob.glob(pattern)}):
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"\n--- the last lines of {path}:\n" + "\n".join(text))
    return "".join(parts)
