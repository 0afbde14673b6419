"""Zero downtime, shown: four rollouts under one steady open request loop, full length.

On a real local Ray Serve (2 CPUs, replicas of 0.2 CPU, Ray metrics exported every second) and
a real MLflow store and Git repository, the real controller (`Controller.reconcile_once`, a pass
whenever `requeue_after` asks, at most 1 s apart) moves one deployment through:

1. a canary v1 -> v2, steps 10/25/50% each with an analysis window of the router's metrics,
   then 100% (v1 removed);
2. a canary v2 -> a candidate that answers 1.2 s late on purpose, aborted by its analysis;
3. a blue-green v2 -> v1: preview (all requests mirrored to v1), analysis, one switch;
4. its rollback: `serveops abort` while switched (v2 kept for the scale-down delay).

Back to back by default, so each rollout inherits the queue the one before left; with `--gap S`
the load runs S seconds between them, as rollouts hours apart would, and what fails in the
gaps is printed apart (never dropped from the figures).

An open loop (its own process, aiohttp) sends `--rate` requests per second through the route for
the whole run, whatever the answers take. With `--load-fraction F` the rate is F times the
router path's saturation throughput, measured first in the same run (bench/saturation.py's
closed loop). Prints, per scenario and for the whole run: requests, failed requests (target 0;
of them shed: 503 at once by the router), the rate answered, latency p50/p99, with the p99 of
a steady window before the rollouts; what the router counted (shed, moved, mirrors dropped);
and whether the stable version's replicas (and the router's) kept their processes (same Ray
actor, same PID) at every pass.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/zero_downtime.py [--rate 60]
        [--load-fraction 0.8] [--max-ongoing 64] [--max-queued 1000] [--shadow-percent 25]
        [--ray-env RAY_SERVE_ENABLE_HA_PROXY=1] [--gap 20]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backlog import CpuSampler, cpu_between
from bench.saturation import saturation
from bench.serving_setup import (
    add_ray_env,
    env_pairs,
    load_average,
    new_client,
    registered_models,
    spec_yaml,
    start_ray,
    wait_answering,
)
from controller.dev.demo import sample_request
from controller.errors import Unreachable
from controller.gitops.loop import run_until_settled
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesGiven
from controller.registry.mlflow import MlflowRegistry
from controller.rollout.router_metrics import RayMetricsSource
from controller.serving.protocol import METRIC_MIRROR_DROPPED, METRIC_OVERFLOW, METRIC_SHED
from controller.source.repository import RepoSource
from tests.e2e.load import LoadProcess
from tests.e2e.story import Story, register_slow
from tests.support import make_repo

NAME = "zd"
ENV = "staging"
SPEC = f"deployments/{ENV}/{NAME}.yaml"

ANALYSIS = """\
    analysis:
      interval: 10s
      min_requests: 20
      max_error_rate_increase: 1
      max_p95_regression_pct: 300
      failure_limit: 1
"""
CANARY = (
    """\
  rollout:
    strategy: canary
    steps:
      - {weight: 10, pause: 0s}
      - {weight: 25, pause: 0s}
      - {weight: 50, pause: 0s}
"""
    + ANALYSIS
)
# 5% to the slow candidate, judged against an absolute p95 ceiling no healthy version nears.
SLOW_CANARY = """\
  rollout:
    strategy: canary
    steps:
      - {weight: 5, pause: 0s}
      - {weight: 50, pause: 0s}
    analysis:
      interval: 10s
      min_requests: 10
      max_error_rate_increase: 1
      max_p95_latency_ms: 900
      failure_limit: 1
"""
BLUE_GREEN = (
    """\
  rollout:
    strategy: blue_green
    scale_down_delay: 10m
"""
    + ANALYSIS
)


def router_counted(address: str) -> dict[str, float]:
    """The routers' pressure counters, summed over the cluster's nodes (Ray's metrics export)."""
    source = RayMetricsSource(address)
    totals = {METRIC_SHED: 0.0, METRIC_OVERFLOW: 0.0, METRIC_MIRROR_DROPPED: 0.0}
    for url in source.endpoints():
        for line in httpx.get(url, timeout=10).text.splitlines():
            for name in totals:
                if line.startswith(f"ray_{name}_total{{"):
                    totals[name] += float(line.rsplit(" ", 1)[1])
    return {"shed": totals[METRIC_SHED], "moved": totals[METRIC_OVERFLOW],
            "mirrors dropped": totals[METRIC_MIRROR_DROPPED]}  # fmt: skip


class GaugeSampler:
    """The routers' slot-wait gauge per version (METRIC_SLOT_WAIT, what the controller reads
    before a start), scraped every `every_s` in a thread of its own (0: not sampled). A scrape
    parses Ray's whole export: at 1 s the bench's own CPU went from 6 to 7% of a core to 16%
    (benchmarks item 28), so it is off unless asked for."""

    def __init__(self, address: str, every_s: float) -> None:
        self.source = RayMetricsSource(address)
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GaugeSampler:
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                versions = self.source.scrape().get(NAME, {})
            except Unreachable:
                continue
            self.samples.append((time.time(), {v: c.slot_wait_s for v, c in versions.items()}))

    def before(self, at: float) -> str:
        """The gauge per version as last scraped up to a second after `at` (a rollout's
        commit): about what the first pass of that rollout read (itself the peak of 10 s)."""
        seen = [s for t, s in self.samples if t < at + 1]
        return ", ".join(f"v{v} {w:.1f}s" for v, w in sorted(seen[-1].items())) if seen else ""


# What the router's messages say (controller/serving/router.py, pressure.py), by bound.
FAILURE_KINDS = {
    "wait for a slot": "wait bound",
    "requests in flight": "count cap",
    "this router replica is answering": "router replica's bound",
    "did not answer": "timeout",
    "too late to answer": "queue deadline",
}


def failure_kind(error: str | None) -> str:
    """Which bound a failed request met, from the router's message."""
    return next((kind for said, kind in FAILURE_KINDS.items() if said in (error or "")), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second")
    parser.add_argument(
        "--gauge-every", type=float, default=0.0, help="s between samples of the slot-wait gauge"
    )
    parser.add_argument(
        "--load-fraction",
        type=float,
        default=None,
        help="offer this fraction of the router path's saturation throughput (measured first, "
        "same run) instead of --rate",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="closed loop measuring the saturation"
    )
    parser.add_argument(
        "--scenario-timeout", type=float, default=300.0, help="seconds a rollout may take"
    )
    parser.add_argument(
        "--promote-held-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="an operator's `serveops promote` for a start held this long for headroom "
        "(at 1.0 of saturation a queue always stands: without it no rollout starts)",
    )
    parser.add_argument(
        "--steady-seconds", type=float, default=15.0, help="load before the rollouts (p99 before)"
    )
    parser.add_argument(
        "--no-rollouts",
        action="store_true",
        help="the control: the same load for --steady-seconds and no rollout (does the load "
        "point hold at all without one?)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds of load between one rollout's end and the next one's start (default: back "
        "to back); failures in the gaps are printed apart",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=10.0, help="spec.request_timeout_s (router)"
    )
    parser.add_argument(
        "--max-ongoing", type=int, default=8, help="spec.max_ongoing_requests (model replicas)"
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=None,
        help="spec.max_queued_requests (the router's count cap; default: the spec's)",
    )
    parser.add_argument(
        "--shadow-percent",
        type=int,
        default=None,
        help="spec.rollout.shadow_percent of the blue-green preview (default: every request)",
    )
    add_ray_env(parser)
    parser.add_argument(
        "--record-get", type=Path, help="write Serve's GET payload once v1 serves (a fixture)"
    )
    args = parser.parse_args()
    ray_env = env_pairs(args.ray_env)

    models = registered_models()
    v1, v2 = models.versions
    slow = register_slow(models.tracking_uri, models.root)
    ray = start_ray(ray_env)
    cpu = CpuSampler(every_s=2.0)  # by role: each rollout's CPU share, and per request
    cpu.start()
    try:
        client = new_client(ray)
        serving = (
            f"  request_timeout_s: {args.request_timeout:g}\n"
            f"  max_ongoing_requests: {args.max_ongoing}\n"
        )
        if args.max_queued is not None:
            serving += f"  max_queued_requests: {args.max_queued}\n"
        slow_canary = spec_yaml(NAME, slow, ENV, serving + SLOW_CANARY)

        def canary(version: str) -> str:
            return spec_yaml(NAME, version, ENV, serving + CANARY)

        preview = (
            f"    shadow_percent: {args.shadow_percent}\n"
            if args.shadow_percent is not None
            else ""
        )

        def blue_green(version: str) -> str:
            return spec_yaml(NAME, version, ENV, serving + BLUE_GREEN + preview)

        repo = models.root / "repo"
        make_repo(repo, {SPEC: canary(v1)}, "deploy v1")
        state = models.root / "state.db"
        store = StateStore(state)
        ctl = Controller(
            RepoSource(str(repo), branch="main"),
            client,
            store,
            lambda: MlflowRegistry(models.tracking_uri),
            ControllerSettings(
                ENV,
                interval_s=1,
                apply_timeout_s=300,
                actor="bench",
                inconclusive_limit=30,
                policies=PoliciesGiven(),  # the bench judges serving, not policies
            ),
        )
        first = run_until_settled(ctl)
        assert first.outcome == "applied", first.message
        url = f"http://127.0.0.1:{client.http_port}/{NAME}"
        wait_answering(url)
        if args.record_get:
            args.record_get.write_text(httpx.get(f"{ray.address}/api/serve/applications/").text)
        story = Story(ctl, store, repo, SPEC, NAME, ray.address, ENV)
        story.drive_timeout_s = args.scenario_timeout
        story.promote_held_after_s = args.promote_held_after
        router_before = story.processes()[NAME]
        rate = args.rate
        if args.load_fraction is not None:
            sat = saturation(url, args.concurrency, 15, warm_up_s=3)
            rate = args.load_fraction * sat.rate
            print(
                f"router path saturation: {sat.rate:.1f} req/s at concurrency {args.concurrency} "
                f"(p50 {sat.p50_ms:.1f} ms); offering {args.load_fraction:g} x = {rate:.1f} req/s"
            )
        load_start = load_average()

        stopped = ""
        gauge = GaugeSampler(ray.address, args.gauge_every)
        with (
            LoadProcess(url, rate, sample_request(), args.request_timeout + 30) as load,
            gauge,
        ):
            time.sleep(2)
            steady_from = time.time()
            time.sleep(args.steady_seconds)
            steady = (steady_from, time.time())
            counted_before = router_counted(ray.address)
            # The rollout under way and when it began: a story that stops in one still counts
            # what failed in it.
            unfinished: list[tuple[str, float]] = []

            def rollout(name: str, outcome: str, **change: Any) -> None:
                if story.scenarios:  # the load alone between two rollouts
                    time.sleep(args.gap)
                unfinished[:] = [(name, time.time())]
                story.run(name, outcome, **change)
                unfinished.clear()

            try:
                if not args.no_rollouts:  # --no-rollouts: the steady window is the run
                    story.watch(NAME, f"{NAME}--v{v1}")
                    rollout("canary v1 -> v2 to 100%", "completed", files={SPEC: canary(v2)})
                    story.watch(NAME, f"{NAME}--v{v2}")
                    rollout(
                        "canary v2 -> slow, aborted by analysis",
                        "aborted",
                        files={SPEC: slow_canary},
                    )
                    rollout("blue-green v2 -> v1, switch", "switched", files={SPEC: blue_green(v1)})
                    abort = ["abort", "--env", ENV, NAME, "--state", str(state), "--reason", "bench"]  # fmt: skip
                    rollout("blue-green rollback (serveops abort)", "aborted", command=abort)
            except AssertionError as err:  # print what ran, and why the story stopped
                stopped = str(err)[:2000]
            stopped_at = time.time()
            time.sleep(2)

        counted = router_counted(ray.address)
        # Measured again once the rollouts are done (one version again): one 15 s figure on a
        # shared machine moves by a third between runs, so say what the offered load was of both.
        after = None
        if args.load_fraction is not None and not stopped:
            after = saturation(url, args.concurrency, 15)
        before = load.summary(*steady)
        print(f"steady, before the rollouts: {before.line()}")
        failed_total = shed_total = 0
        for s in story.scenarios:
            summary = load.summary(s.started_at, s.ended_at)
            failed_total += len(summary.failed)
            shed_total += summary.shed
            print(f"{s.name} ({s.passes} passes): {summary.line()}")
            print(f"    steps: {', '.join(s.events)}")
            # What its analyses said (held, failed), each different message once, the last 3.
            said = list(dict.fromkeys(m for m in s.messages if "analysis" in m))
            for message in said[-3:]:
                print(f"    said: {message[:600]}")
            if gauge.samples:
                print(f"    slot-wait gauge as it began: {gauge.before(s.started_at)}")
            held = [w for _, w in s.waits if w.startswith("headroom")]
            if held:  # the candidate's start held while a queue stood (headroom.py)
                promoted = ", then promoted" if s.promoted else ""
                print(f"    start held {s.waited('headroom'):.0f}s{promoted} for {held[0]}")
            use = cpu_between(cpu.samples, s.started_at, s.ended_at, load.answers)
            if use is not None:
                print(f"    CPU (share of a core, and per request answered): {use.line()}")
            for a in summary.failed[:3]:
                print(f"    failed: {a}")
            if summary.failed:
                kinds = Counter(
                    f"{a.status} v{a.version} {failure_kind(a.error)}" for a in summary.failed
                )
                print(f"    failed by status, version and bound: {dict(kinds.most_common())}")
        if stopped and unfinished:
            name, started = unfinished[0]
            summary = load.summary(started, stopped_at)
            failed_total += len(summary.failed)
            shed_total += summary.shed
            print(f"{name}, did not finish: {summary.line()}")
            if gauge.samples:
                print(f"    slot-wait gauge as it began: {gauge.before(started)}")
            held = [w for _, w in story.waits if w.startswith("headroom")]
            if held:
                last = story.waits[-1][0] - story.waits[0][0]
                print(
                    f"    start held {len(held)} of {len(story.waits)} passes ({last:.0f}s): {held[0]}"
                )
        gaps = [
            load.summary(a.ended_at, b.started_at) for a, b in itertools.pairwise(story.scenarios)
        ]
        if args.gap:
            print(
                f"between the rollouts ({len(gaps)} gaps of {args.gap:g} s): "
                f"{sum(g.requests for g in gaps)} requests, "
                f"failed {sum(len(g.failed) for g in gaps)} (shed {sum(g.shed for g in gaps)})"
            )
        whole = load.summary()
        print(f"whole run: {whole.line()}")
        if whole.failed:  # when they failed, against the steps taken: overload or a rollout?
            first = min(a.sent_at for a in whole.failed)
            buckets = Counter(int((a.sent_at - first) // 5) for a in whole.failed)
            print(
                f"failed requests by 5 s from {time.strftime('%H:%M:%S', time.localtime(first))}: "
                + ", ".join(f"+{5 * k}s {n}" for k, n in sorted(buckets.items()))
            )
        print(
            f"open loop: offered {rate:.1f} req/s, sent late p50 {load.lag_ms(0.5):.1f} ms "
            f"p99 {load.lag_ms(0.99):.1f} ms max {load.lag_ms(1.0):.0f} ms"
        )
        if after is not None:
            print(
                f"router path saturation after the rollouts: {after.rate:.1f} req/s; the load "
                f"offered was {rate / sat.rate:.2f} of the first figure, "
                f"{rate / after.rate:.2f} of this one"
            )
        during = load.summary(
            story.scenarios[0].started_at if story.scenarios else steady[1], load.stopped_at
        )
        print(
            f"failed client requests in the rollouts: {failed_total} (target 0), of them "
            f"shed {shed_total}; p99 before {before.p99_ms:.0f} ms, during {during.p99_ms:.0f} ms "
            f"(from when each was due: {before.p99_due_ms:.0f} ms, {during.p99_due_ms:.0f} ms)"
        )
        print(
            "the router counted during the rollouts: "
            + ", ".join(f"{k} {v - counted_before[k]:.0f}" for k, v in counted.items())
        )
        print(f"router kept its processes: {story.processes().get(NAME) == router_before}")
        print(
            f"stable replicas kept their processes at every pass: {not story.restarts}"
            + (f" ({story.restarts})" if story.restarts else "")
        )
        print(f"load average: {load_start} at start, {load_average()} at end")
        print(f"ray start environment: {ray_env or 'defaults'}")
        if stopped:
            print(f"THE STORY STOPPED: {stopped}")
        client.close()
        store.close()
    finally:
        cpu.stop()
        ray.stop()


if __name__ == "__main__":
    main()
