"""After a disturbance at 0.8 of saturation, does the router path drain its backlog, and where
does the time go while it does?

On a real local Ray Serve (2 CPUs, one replica of 0.2 CPU, serveops' rendering: a version
application and its router) and MLflow store. First the router path's saturation (a closed
loop of `--concurrency`, as bench/saturation.py), and what an open loop offered
`--capacity-over` times it gets answered once a queue stands: the two ways of measuring the
path's capacity, side by side, each with its CPU per request. Then an open loop (its own
process) offers `--load-fraction` of the saturation; after a window with no disturbance, each
round applies each disturbance in turn, then watches `--observe` seconds from its start:

- `burst`: a second open loop adds `--burst` x saturation for `--disturb-seconds`;
- `hog`: `--hogs` processes spin at nice 0 for `--disturb-seconds` (CPU taken away);
- `start`: v2's version application is added (what a rollout's first step starts) and removed
  at the end of the watch.

At the end, the router's queue-wait counter (`ray_serveops_router_queue_wait_seconds_total`,
scraped as the controller does) is set beside the sampled queue: by Little's law its seconds
over the elapsed seconds is how many waited on average.

Sampled meanwhile: the router's queue per version every 0.25 s (`Router.pressure_stats`, read
through a Serve handle by a driver in its own process) and every process's CPU every second.
Printed per 2 s bin from the disturbance's start: the loop's p50 (by send time), what was
answered (by answer time), the router's waiting / running / slot time, and CPU per process
group, also per answered request: a path whose cost per request grows with its backlog cannot
drain it (a metastable state).

    RAY_AUTH_MODE=disabled flock /tmp/serveops-ray.lock .venv/bin/python -u bench/backlog.py \
        [--rounds 2] [--disturbances burst,hog,start] [--ray-env K=V]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from bench.candidate_start import gone
from bench.saturation import saturation
from bench.serving_setup import (
    add_ray_env,
    env_pairs,
    load_average,
    new_client,
    registered_models,
    rendered,
    serve_apps,
    start_ray,
    wait_running,
)
from controller.dev.demo import sample_request
from controller.rollout.router_metrics import RayMetricsSource, Snapshot, window
from controller.serving.protocol import ROUTER_DEPLOYMENT
from tests.e2e.load import Answer, LoadProcess

NAME = "backlog"
BIN_S = 2.0


def group(pid: int, cmdline: list[str], own: set[int]) -> str:
    """A process's role in the run, from its command line."""
    cmd = " ".join(cmdline)
    if pid in own:
        return "bench"
    for marker, name in (
        ("ServeReplica:", ""),
        ("ProxyActor", "proxy"),
        ("haproxy", "haproxy"),
        ("ServeController", "serve controller"),
        ("tests.e2e.load", "load"),
        ("backlog.py --sample", "sampler"),
        ("backlog.py --hog", "hog"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs"),
        ("dashboard", "dashboard"),
        ("ray::", "other worker"),
    ):
        if marker in cmd:
            if marker == "ServeReplica:":  # ray::ServeReplica:<app>:<deployment>
                # The title gains the running method (`Router.handle_request...`) at times.
                app, _, rest = cmd.split("ServeReplica:", 1)[1].partition(":")
                return "router" if rest.startswith(ROUTER_DEPLOYMENT) else app
            return name
    return "other"


IDLE_POLICY = 5  # SCHED_IDLE, as /proc/<pid>/task/<tid>/stat's 41st field says


def idle_thread_cpu(pid: int) -> float:
    """CPU seconds so far of the process's threads now in SCHED_IDLE (serveops' idle-time
    model load, controller/serving/startup.py): what runs only when no normal thread wants
    the core (item 22 in docs/benchmarks.md: it still slows the threads that do)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state is field 3, utime 14, stime 15, policy 41 (1-based).
        if int(fields[38]) == IDLE_POLICY:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class CpuSampler:
    """CPU seconds so far per process group, every `every_s`: [(wall time, {group: seconds})],
    summed from each process's CPU since the last sample. A replica keeps the group it was
    first seen in (its title changes with the method it runs). A Serve replica's CPU in
    SCHED_IDLE threads is also counted apart, under `<group> idle`."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # CPU seconds per group, summed from every delta
        self._totals: defaultdict[str, float] = defaultdict(float)
        self._groups: dict[int, str] = {}
        self._last: dict[int, tuple[float, float]] = {}  # pid: (all threads, idle threads)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        own = {os.getpid()}
        while not self._stop.wait(self.every_s):
            now: dict[int, tuple[float, float]] = {}
            for p in psutil.process_iter(["cmdline", "cpu_times"]):
                times = p.info["cpu_times"]
                if times is None:
                    continue
                cmd = p.info["cmdline"] or []
                replica = "ServeReplica:" in " ".join(cmd)
                g = self._groups.get(p.pid) or group(p.pid, cmd, own)
                if replica:  # its title names its method at times: keep the first name
                    self._groups[p.pid] = g
                t, idle = times.user + times.system, idle_thread_cpu(p.pid) if replica else 0.0
                last_t, last_idle = self._last.get(p.pid, (0.0, 0.0))
                self._totals[g] += max(0.0, (t - last_t) - (idle - last_idle))
                if idle > last_idle:
                    self._totals[f"{g} idle"] += idle - last_idle
                now[p.pid] = (t, idle)
            self._last = now
            self.samples.append((time.time(), dict(self._totals)))


def router_sampler(gcs: str, router_app: str, out: Path) -> subprocess.Popen[bytes]:
    """A driver in its own process reading the router's `pressure_stats` into `out` (JSON
    lines) until its stdin closes."""
    return subprocess.Popen(
        [sys.executable, __file__, "--sample", gcs, router_app, str(out)], stdin=subprocess.PIPE
    )


def _sample(gcs: str, router_app: str, out: str) -> None:
    import ray
    from ray import serve

    ray.init(address=gcs, logging_level=logging.ERROR, log_to_driver=False)
    handle = serve.get_app_handle(router_app)
    done = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    with open(out, "w") as f:
        while not done.wait(0.25):
            t = time.time()
            try:
                stats = handle.pressure_stats.remote().result(timeout_s=5)
            except Exception as err:  # a sample lost is a gap in the table, not the run's end
                stats = {"error": repr(err)[:200]}
            f.write(json.dumps({"t": t, **stats}) + "\n")
            f.flush()
    ray.shutdown()


def _hog(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def hogs(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, __file__, "--hog", str(seconds)]) for _ in range(n)]


def read_router(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class CpuUse:
    """CPU between two samples: per process group, seconds used; and the requests answered 200
    meanwhile."""

    seconds: float  # wall time between the samples
    used: dict[str, float]
    answered: int

    def share(self, group: str | None = None) -> float:
        """Share of one core: a group's, or the machine's (None)."""
        used = sum(self.used.values()) if group is None else self.used.get(group, 0.0)
        return used / self.seconds

    def ms_per_request(self, group: str) -> float:
        return 1000 * self.used.get(group, 0.0) / max(1, self.answered)

    def line(self, top: int = 6) -> str:
        """The machine's share, then the busiest groups': share and ms per request."""
        busiest = sorted(self.used, key=lambda g: -self.used[g])[:top]
        return f"machine {100 * self.share():.0f}% | " + " | ".join(
            f"{g} {100 * self.share(g):.0f}% {self.ms_per_request(g):.1f}ms" for g in busiest
        )


def cpu_between(
    cpu: list[tuple[float, dict[str, float]]],
    lo: float,
    hi: float,
    answers: list[Answer] | None = None,
    rate: float | None = None,
) -> CpuUse | None:
    """The CPU between the samples around [lo, hi), with the requests answered 200 meanwhile
    (counted in `answers`, or `rate` per second when they were not kept)."""
    inside = [(t, c) for t, c in cpu if lo - 1 <= t <= hi + 0.5]
    if len(inside) < 2:
        return None
    (ta, a), (tb, b) = inside[0], inside[-1]
    used = {g: b.get(g, 0.0) - a.get(g, 0.0) for g in b}
    if rate is not None:
        ok = round(rate * (tb - ta))
    else:
        ok = sum(1 for x in answers or [] if x.status == 200 and ta <= x.received_at < tb)
    return CpuUse(tb - ta, used, ok)


def cpu_use(
    cpu: list[tuple[float, dict[str, float]]],
    lo: float,
    hi: float,
    answers: list[Answer] | None = None,
    top: int = 6,
    rate: float | None = None,
) -> str:
    """`cpu_between`'s line ("" without two samples)."""
    use = cpu_between(cpu, lo, hi, answers, rate)
    return use.line(top) if use is not None else ""


def timeline(
    t0: float,
    seconds: float,
    answers: list[Answer],
    router: list[dict[str, Any]],
    cpu: list[tuple[float, dict[str, float]]],
    app: str,
) -> list[str]:
    """One line per `BIN_S` from `t0`: the loop's p50 by send time, OK answers per second by
    answer time, the router's queue for `app`, CPU per group (share of a core) and per answer."""
    lines = []
    for k in range(int(seconds / BIN_S)):
        lo, hi = t0 + k * BIN_S, t0 + (k + 1) * BIN_S
        sent = sorted(a.latency_s for a in answers if lo <= a.sent_at < hi)
        p50 = 1000 * sent[len(sent) // 2] if sent else float("nan")
        ok = sum(1 for a in answers if a.status == 200 and lo <= a.received_at < hi)
        shed = sum(1 for a in answers if a.shed and lo <= a.sent_at < hi)
        qs = [r["queues"].get(app, {}) for r in router if lo <= r["t"] < hi and "queues" in r]
        waiting = statistics.fmean(q.get("waiting", 0) for q in qs) if qs else float("nan")
        running = statistics.fmean(q.get("running", 0) for q in qs) if qs else float("nan")
        slot = [q["slot_s"] for q in qs if q.get("slot_s") is not None]
        slot_ms = 1000 * statistics.fmean(slot) if slot else float("nan")
        use = cpu_use(cpu, lo, hi, answers)
        lines.append(
            f"  +{k * BIN_S:4.0f}s sent {len(sent) / BIN_S:5.1f}/s p50 {p50:6.0f} ms shed {shed:3d} "
            f"| OK {ok / BIN_S:5.1f}/s | waiting {waiting:5.1f} running {running:4.1f} "
            f"slot {slot_ms:5.0f} ms | {use}"
        )
    return lines


def queue_story(t0: float, seconds: float, router: list[dict[str, Any]], app: str) -> str:
    """The router's queue for `app` over the watch: its peak, and when it was last seen."""
    waits = [
        (r["t"] - t0, r["queues"].get(app, {}).get("waiting", 0))
        for r in router
        if t0 <= r["t"] < t0 + seconds and "queues" in r
    ]
    if not waits:
        return "no router samples"
    peak_at, peak = max(waits, key=lambda tw: tw[1])
    queued = [t for t, w in waits if w >= 1]
    if not queued:
        return "no request waited for a slot"
    if waits[-1][1] >= 1:
        return f"peak {peak} waiting at +{peak_at:.0f}s; {waits[-1][1]} still waiting at the end"
    return f"peak {peak} waiting at +{peak_at:.0f}s; none waiting after +{queued[-1]:.0f}s"


def little(
    start: tuple[float, Snapshot],
    end: tuple[float, Snapshot],
    router: list[dict[str, Any]],
    app: str,
    version: str,
) -> str:
    """The router's queue-wait counter between two scrapes against its sampled queue: by
    Little's law, the seconds waited over the seconds elapsed is how many waited on average."""
    (t0, before), (t1, after) = start, end
    w = window(before, after, NAME, version)
    waiting = [r["queues"].get(app, {}).get("waiting", 0) for r in router
               if t0 <= r["t"] < t1 and "queues" in r]  # fmt: skip
    sampled = statistics.fmean(waiting) if waiting else float("nan")
    return (
        f"queue-wait counter: {w.queue_wait_s:.1f} s waited over {t1 - t0:.0f} s = "
        f"{w.queue_wait_s / (t1 - t0):.2f} waiting on average (sampled: {sampled:.2f}); "
        f"{w.mean_wait_ms or 0:.1f} ms a request over {w.requests} answered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-fraction", type=float, default=0.8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--disturbances", default="burst,hog,start")
    parser.add_argument("--disturb-seconds", type=float, default=8.0)
    parser.add_argument("--burst", type=float, default=0.5, help="x saturation, added")
    parser.add_argument("--hogs", type=int, default=2)
    add_ray_env(parser)
    parser.add_argument("--capacity-over", type=float, default=1.3, help="x saturation")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--observe", type=float, default=40.0, help="seconds from each start")
    args = parser.parse_args()
    kinds = args.disturbances.split(",")

    models = registered_models()
    v1, v2 = models.versions
    ray = start_ray(env_pairs(args.ray_env))
    out = Path(tempfile.mkdtemp(prefix="serveops-backlog-")) / "router.jsonl"
    sampler: subprocess.Popen[bytes] | None = None
    cpu = CpuSampler()
    try:
        client = new_client(ray)
        serving = rendered(models, NAME, v1)  # [v1's version app, the router]
        app, router_app = serving[0]["name"], serving[1]["name"]
        cand = rendered(models, NAME, v2)[0]
        url = serve_apps(client, serving, NAME)
        cpu.start()
        t_sat = time.time()
        sat = saturation(url, args.concurrency, 15, warm_up_s=3)
        rate = args.load_fraction * sat.rate
        print(
            f"router path saturation: {sat.rate:.1f} req/s at concurrency {args.concurrency}; "
            f"offering {args.load_fraction:g} x = {rate:.1f} req/s; load average {load_average()}; "
            f"Ray's env {args.ray_env or 'as is'}"
        )
        # Its answers are not kept: CPU per request from its rate.
        print(f"  closed loop: {cpu_use(cpu.samples, t_sat + 4, time.time() - 1, rate=sat.rate)}")
        # The open loop's capacity: offered more than the closed loop answered, what does the
        # path answer once its queue stands (the last `--capacity-seconds` - 8 s)?
        with LoadProcess(url, args.capacity_over * sat.rate, sample_request(), 60) as over:
            t_over = time.time()
            time.sleep(args.capacity_seconds)
        lo, hi = t_over + 8, t_over + args.capacity_seconds
        ok = sum(1 for a in over.answers if a.status == 200 and lo <= a.received_at < hi)
        print(
            f"open loop at {args.capacity_over:g} x: answered {ok / (hi - lo):.1f} req/s OK once "
            f"queued, {ok / (hi - lo) / sat.rate:.2f} of the closed loop's; "
            f"{cpu_use(cpu.samples, lo, hi, over.answers)}"
        )
        time.sleep(10)  # its queue drains (the router sheds past 5 s of wait)
        windows: list[tuple[int, str, float]] = []
        extra: list[Answer] = []
        sampler = router_sampler(ray.gcs_address, router_app, out)
        metrics = RayMetricsSource(ray.address)
        counted = (time.time(), metrics.scrape())  # the router's queue-wait counter from here
        with LoadProcess(url, rate, sample_request(), timeout_s=60) as load:
            time.sleep(10)
            windows.append((0, "none", time.time()))
            time.sleep(args.observe)
            for r in range(args.rounds):
                for kind in kinds:
                    t0 = time.time()
                    windows.append((r, kind, t0))
                    if kind == "burst":
                        more = args.burst * sat.rate
                        with LoadProcess(url, more, sample_request(), timeout_s=60) as burst:
                            time.sleep(args.disturb_seconds)
                        extra.extend(burst.answers)
                    elif kind == "hog":
                        for p in hogs(args.hogs, args.disturb_seconds):
                            p.wait()
                    elif kind == "start":
                        client.put([*serving, cand], client.get())
                        wait_running(client, [cand["name"]])
                        print(f"round {r + 1} start: v2 running after {time.time() - t0:.1f}s")
                    time.sleep(max(0.0, t0 + args.observe - time.time()))
                    if kind == "start":
                        client.put(serving, client.get())
                        gone(client, cand["name"])
        cpu.stop()
        time.sleep(2)  # Ray exports the router's counters every second here (RAY_ENV)
        counted_to = (time.time(), metrics.scrape())
        assert sampler.stdin is not None
        sampler.stdin.close()
        sampler.wait(timeout=60)
        router = read_router(out)
        answers = [*load.answers, *extra]
        print(f"router samples: {len(router)} ({sum('error' in r for r in router)} failed)")
        print(f"  {little(counted, counted_to, router, app, v1)}")
        for r, kind, t0 in windows:
            s = load.summary(t0, t0 + args.observe)
            print(f"round {r + 1} {kind}: {s.line()}")
            print(f"  router queue: {queue_story(t0, args.observe, router, app)}")
            for line in timeline(t0, args.observe, answers, router, cpu.samples, app):
                print(line)
        print(f"load average at the end {load_average()}")
    finally:
        cpu.stop()
        if sampler is not None and sampler.poll() is None:
            sampler.kill()
        ray.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sample":
        _sample(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--hog":
        _hog(float(sys.argv[2]))
    else:
        main()
