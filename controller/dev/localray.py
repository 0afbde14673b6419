"""A local Ray head for the demo, the end-to-end tests, `simulate` and `replay`.

Always started with an explicit CPU count (Ray otherwise takes every core and a third replica on
a 2-core machine waits forever), on free ports so several can coexist, and stopped with its
whole process tree: `ray stop` would kill every Ray on the machine, not just ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from controller.dev import workernice
from controller.errors import ServeopsError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayExitedEarly(ServeopsError):
    pass


def kill_tree(pid: int, timeout_s: float = 15.0) -> None:
    """Terminate a process and all its descendants, then kill what is left after `timeout_s`."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def watch(owner_pid: int, target_pid: int, poll_s: float = 1.0) -> None:
    """Wait until `owner_pid` is gone (or a zombie), then kill `target_pid` and its tree."""
    try:
        owner, target = psutil.Process(owner_pid), psutil.Process(target_pid)
        while target.is_running() and owner.is_running():
            if owner.status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(poll_s)
    except psutil.NoSuchProcess:
        pass
    kill_tree(target_pid)


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec function pinning the child (and everything it starts) to `cpus`."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    chosen = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, chosen)

    return pin


def reserve_cpus(generator: int) -> tuple[set[int], set[int]] | None:
    """Split this process's cores: (for Ray, for the load generator), the generator taking the
    last `generator` cores; None when there are too few to split (or no affinity support)."""
    if generator <= 0 or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= generator:
        return None
    return set(cores[:-generator]), set(cores[-generator:])


class LocalRay:
    """`ray start --head --block` in its own process group, torn down with all its children."""

    def __init__(
        self,
        num_cpus: float = 2,
        *,
        dashboard_port: int | None = None,
        env: dict[str, str] | None = None,
        cpu_affinity: set[int] | None = None,
        object_store_bytes: int | None = None,
    ) -> None:
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes  # None: Ray's default (30% of memory)
        # Cores Ray's processes (and so the replicas) may run on; the rest stay free, e.g. for
        # a load generator beside the cluster. None: all of them.
        self.cpu_affinity = cpu_affinity
        self.dashboard_port = dashboard_port or free_port()
        self.env = env or {}
        # Unix socket paths under it must stay short, so not under a deep work tree.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="serveops-ray-", dir="/tmp"))
        self.gcs_address = ""  # host:port once started
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> LocalRay:
        """Start and wait until the dashboard answers; retry with fresh ports if Ray exits early
        (a port picked as free can be taken by another process before Ray binds it)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout_s)
                return self
            except RayExitedEarly:
                self.stop()
                if attempt == attempts:
                    raise
                self.temp_dir = Path(tempfile.mkdtemp(prefix="serveops-ray-", dir="/tmp"))
                self.dashboard_port = free_port()
        return self

    def _start_once(self, timeout_s: float) -> None:
        ray_bin = Path(sys.executable).with_name("ray")
        ports = {
            "--port": free_port(),
            "--dashboard-port": self.dashboard_port,
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--metrics-export-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        self.gcs_address = f"127.0.0.1:{ports['--port']}"  # for a driver's ray.init (benches)
        cmd = [
            str(ray_bin), "start", "--head", "--block", f"--num-cpus={self.num_cpus}",
            "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        cmd += [f"{flag}={port}" for flag, port in ports.items()]
        if self.object_store_bytes is not None:
            cmd.append(f"--object-store-memory={self.object_store_bytes}")
        # RAY_AUTH_MODE: once any local `ray.init()` wrote ~/.ray/auth_token, `ray start` with
        # the mode unset turns token authentication on, and the dashboard answers 401 to
        # serveops, which sends no token. This head listens on 127.0.0.1 for this machine's
        # tools, as it did before that file existed: explicitly without tokens.
        # PATH: a Ray Job's entrypoint (`python -m controller.batch.job`) runs in a shell with
        # Ray's environment; this cluster runs serveops' own Python, so its `python` comes first.
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            **self.env,
        }
        # New workers start at the workers' nice, not the raylet's 0 (controller/dev/workernice.py):
        # Ray adds none of its own, and the raylet's threads are moved once it is up.
        self.workers_start_low = workernice.wanted(env)
        if self.workers_start_low:
            env[workernice.NICE_ENV] = "0"
        log = open(self.temp_dir / "ray-start.log", "ab")  # noqa: SIM115
        # Ray puts its driver's working directory on every worker's sys.path: started from a
        # checkout, workers would import `controller` from it and not from what is installed
        # (or shipped with --serving-code). Its own temp dir holds no code.
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=self.temp_dir,
            preexec_fn=_pin(self.cpu_affinity),
        )
        log.close()
        # If our process is SIGKILLed, stop() never runs: a watchdog outside Ray's tree stops it.
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.dev.localray",
                str(os.getpid()),
                str(self._proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(timeout_s)
        if self.workers_start_low:
            self._start_workers_low()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "nothing"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log = (self.temp_dir / "ray-start.log").read_text(errors="replace")[-2000:]
                raise RayExitedEarly(f"ray start exited early:\n{log}")
            try:
                response = httpx.get(f"{self.address}/api/serve/applications/", timeout=2)
                if response.status_code == 200:
                    return
                if response.status_code in (401, 403):
                    self.stop()
                    raise ServeopsError(
                        f"the local Ray's dashboard at {self.address} requires authentication "
                        f"(HTTP {response.status_code}): its RAY_AUTH_MODE must be 'disabled'"
                    )
                last = f"HTTP {response.status_code}: {response.text.strip()[:300]}"
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.5)
        dashboard = self._log_tail("dashboard.log")
        self.stop()
        raise ServeopsError(
            f"local Ray did not become ready in {timeout_s:.0f}s: its dashboard at "
            f"{self.address} last answered {last}\n{dashboard}"
        )

    def _start_workers_low(self) -> None:
        """The raylet's threads (and its workers') at the workers' nice."""
        assert self._proc is not None
        raylet = workernice.raylet_of(self._proc.pid, self.temp_dir)
        if raylet is None:  # not expected once the dashboard answers; say so, do not fail
            print(
                f"serveops: no raylet found under {self.temp_dir}: this head's workers run at "
                "nice 0 (RAY_worker_niceness=0)",
                file=sys.stderr,
            )
            return
        workernice.start_workers_at(raylet)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        """The end of one of Ray's session logs (gone once stop() removes the temp dir)."""
        path = self.temp_dir / "session_latest" / "logs" / name
        try:
            return f"{path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({path} not written)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate the whole tree (raylet's workers included), then kill what is left."""
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait(timeout=5)
            self._watchdog = None
        if self._proc is None:
            return
        kill_tree(self._proc.pid, timeout_s)
        self._proc.wait(timeout=5)
        self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # the watchdog: python -m controller.dev.localray OWNER_PID RAY_PID
    watch(int(sys.argv[1]), int(sys.argv[2]))
