"""`python -m gluonft.launch`: start a distributed job (scheduler, servers, workers).

    python -m gluonft.launch --workers 2 --servers 1 -- python train.py
    python -m gluonft.launch --workers 4 --servers 2 --hosts hosts.txt -- python train.py

Sets the ``DMLC_*`` variables MXNet's parameter-server kvstore (ps-lite) reads and starts one
scheduler, ``--servers`` servers (each is ``python -c "import mxnet"``: MXNet runs the server
loop at import when ``DMLC_ROLE`` says so) and ``--workers`` copies of COMMAND, on this machine
(127.0.0.1) by default or over ssh on the hosts listed one per line in ``--hosts`` (servers
and workers round-robin, the scheduler on this machine), as MXNet's own ``tools/launch.py``
does with its ssh launcher. Every line a process prints is forwarded with its role and index
(``[worker 1] ...``; that index is the launcher's order of start: ps-lite numbers the
workers' ranks in its own order, so the worker of rank 0 may be any of them). The launcher
exits with the first non-zero exit code of any process (128 + N for a process killed by
signal N, as a shell reports it) and then stops all the others (SIGTERM, SIGKILL after
``--grace`` seconds), also when it is itself stopped (SIGTERM, SIGHUP, Ctrl-C): no process is
left behind, and a worker waiting for a dead peer does not hang the job. When every worker has
exited 0, servers and scheduler end by themselves (the launcher stops them after ``--grace``
seconds if not).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .threads import physical_cores, user_set_threads

__all__ = ["Job", "Process", "main", "free_port", "job_environment"]

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on at ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            raise SystemExit(f"gluonft.launch: port {port} on {host} is busy ({error.strerror}); "
                             f"choose another --port or leave it out for a free one") from None


def job_environment(*, role: str, root: str, port: int, servers: int, workers: int,
                    node_host: Optional[str] = None) -> Dict[str, str]:
    """The ``DMLC_*`` variables of one process of the job."""
    env = {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root, "DMLC_PS_ROOT_PORT": str(port),
           "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers)}
    if node_host:
        env["DMLC_NODE_HOST"] = node_host  # the address this node binds and announces
    return env


@dataclass
class Process:
    label: str
    popen: subprocess.Popen


class Job:
    """The processes of one launch, supervised."""

    def __init__(self, *, grace: float = 10.0, out=sys.stdout):
        self.processes: List[Process] = []
        self.grace = grace
        self.out = out
        self._lock = threading.Lock()

    def start(self, label: str, argv: Sequence[str], env: Dict[str, str]) -> None:
        popen = subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1,
                                 start_new_session=True)  # its own group: stopped as a whole
        self.processes.append(Process(label, popen))
        threading.Thread(target=self._forward, args=(label, popen), daemon=True).start()

    def _forward(self, label: str, popen: subprocess.Popen) -> None:
        for line in popen.stdout:
            with self._lock:
                self.out.write(f"[{label}] {line}")
                self.out.flush()

    def wait(self, workers: Sequence[str]) -> int:
        """Until every worker has exited 0 (then 0) or any process exits non-zero (then its
        code, after stopping the rest)."""
        while True:
            for p in self.processes:
                code = p.popen.poll()
                if code not in (None, 0):
                    if code < 0:  # killed by a signal: the shell's code for it, 128 + N
                        self._say(f"{p.label} was killed by {signal.Signals(-code).name}; "
                                  f"stopping the others")
                        code = 128 - code
                    else:
                        self._say(f"{p.label} exited with code {code}; stopping the others")
                    self.stop()
                    return code
            if all(p.popen.poll() == 0 for p in self.processes if p.label in workers):
                self._finish()
                return 0
            time.sleep(0.2)

    def _finish(self) -> None:
        deadline = time.time() + self.grace
        while time.time() < deadline and any(p.popen.poll() is None for p in self.processes):
            time.sleep(0.2)
        left = [p.label for p in self.processes if p.popen.poll() is None]
        if left:
            self._say(f"the workers are done; stopping {', '.join(left)}")
            self.stop()

    def stop(self) -> None:
        """SIGTERM to every process group still running, SIGKILL after the grace period."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.processes if p.popen.poll() is None]
            for p in running:
                try:
                    os.killpg(p.popen.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + (self.grace if sig == signal.SIGTERM else 5)
            while time.time() < deadline and any(p.popen.poll() is None for p in running):
                time.sleep(0.1)

    def _say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[launch] {text}\n")
            self.out.flush()


def _read_hosts(path: str) -> List[str]:
    try:
        with open(path) as f:
            hosts = [line.split("#")[0].strip() for line in f]
    except OSError as error:
        raise SystemExit(f"gluonft.launch: cannot read --hosts {path}: {error.strerror}") \
            from None
    hosts = [h for h in hosts if h]
    if not hosts:
        raise SystemExit(f"gluonft.launch: --hosts {path} lists no host (one per line)")
    return hosts


def _ssh(host: str, argv: Sequence[str], env: Dict[str, str]) -> List[str]:
    """ssh ``host`` running ``argv`` in this directory with ``env`` exported."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    remote = f"cd {shlex.quote(os.getcwd())} && env {exports} {shlex.join(argv)}"
    return ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", host, remote]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gluonft.launch",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, required=True, help="worker processes")
    p.add_argument("--servers", type=int, default=1, help="parameter servers (default 1)")
    p.add_argument("--hosts", help="a file of host names, one per line (ssh); default: "
                                   "everything on this machine")
    p.add_argument("--port", type=int, help="the scheduler's port (default: a free one)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL, and for servers to end")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("gluonft.launch: give the workers' command after --, e.g. "
                         "`python -m gluonft.launch --workers 2 -- python train.py`")
    for flag, value in (("--workers", args.workers), ("--servers", args.servers)):
        if value < 1:
            raise SystemExit(f"gluonft.launch: {flag} must be at least 1, got {value}")
    hosts = _read_hosts(args.hosts) if args.hosts else None
    root = socket.gethostbyname(socket.gethostname()) if hosts else LOCALHOST
    if args.port is not None:
        _check_port(LOCALHOST if not hosts else "", args.port)
    port = args.port or free_port(LOCALHOST if not hosts else "")
    common = dict(root=root, port=port, servers=args.servers, workers=args.workers)
    job = Job(grace=args.grace)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    server_argv = [sys.executable, "-c", "import mxnet"]

    # Workers on this machine share its cores: each gets its part (unless OMP_NUM_THREADS is
    # set), not every core each (2 workers x 2 threads on 2 cores ran 3.5x slower than one).
    threads = {} if hosts or user_set_threads() else {
        "OMP_NUM_THREADS": str(max(1, physical_cores() // args.workers))}

    def run(label, role, argv, index):
        host = hosts[index % len(hosts)] if hosts and role != "scheduler" else None
        env = job_environment(role=role, node_host=host or (None if hosts else LOCALHOST),
                              **common)
        if role == "worker":
            env.update(threads)
        else:  # servers and the scheduler mostly wait on sockets
            env.setdefault("OMP_NUM_THREADS", "1")
        if host:
            job.start(label, _ssh(host, argv, env), base)
        else:
            job.start(label, argv, {**base, **env})

    def stopped(signum, frame):  # `kill` or a closed terminal: the job goes with the launcher
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stopped)
    try:
        run("scheduler", "scheduler", server_argv, 0)
        for i in range(args.servers):
            run(f"server {i}", "server", server_argv, i)
        workers = [f"worker {i}" for i in range(args.workers)]
        for i, label in enumerate(workers):
            run(label, "worker", command, i)
        return job.wait(workers)
    except KeyboardInterrupt:
        job.stop()
        return 130


if __name__ == "__main__":
    sys.exit(main())
