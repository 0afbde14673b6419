"""The demo's clients: a steady request load through a route, in background threads, that counts
every answer (and every failure) so the tour can say how many requests a rollout failed.

Each request carries one row of scikit-learn's bundled breast-cancer data set, in turn, so a
recording of this load holds varied inputs: a simulation of two model versions on it compares
their predictions on 569 different rows, not one row repeated. Each also carries an
`X-Request-Id`, and its answer remembers which row it sent: the tour writes the rows' true
labels for those ids, as a labelling team would later (`labels_csv`), and the monitor joins
them with the recording for live accuracy.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from controller.serving.protocol import VERSION_HEADER


def row_bodies(scale: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One MLflow scoring-protocol body per row of the bundled data set; `scale` multiplies
    some columns (inputs that drifted away from the training data)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    for column, factor in (scale or {}).items():
        data[column] = data[column] * factor
    return [{"dataframe_split": data.iloc[[i]].to_dict(orient="split")} for i in range(len(data))]


@dataclass(frozen=True)
class Answer:
    at: float  # wall clock (time.time()) when the request left
    status: int  # 0: no HTTP answer (connection error, timeout)
    version: str | None
    error: str = ""
    request_id: str = ""  # the X-Request-Id sent
    row: int = -1  # the data set's row the body held


def labels_csv(answers: list[Answer], labels: list[Any]) -> str:
    """`request_id,label` for the answered requests (the monitor's delayed-labels format);
    `labels` is the data set's target, by row."""
    lines = ["request_id,label"]
    lines += [f"{a.request_id},{labels[a.row]}" for a in answers if a.status == 200 and a.row >= 0]
    return "\n".join(lines) + "\n"


@dataclass
class Window:
    """What the load saw between two moments."""

    requests: int
    failed: list[Answer]
    versions: Counter[str]
    seconds: float

    def line(self) -> str:
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items())) or "none"
        return (
            f"{self.requests} requests in {self.seconds:.0f}s, {len(self.failed)} failed "
            f"(answered by {versions})"
        )


@dataclass
class Load:
    """POST to `url` at about `rate` requests per second from `threads` paced threads, until
    `stop()`. Requests time out after `timeout_s`; an answer other than 200 is a failure."""

    url: str
    rate: float = 20.0
    threads: int = 8
    timeout_s: float = 30.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.threads < 1:
            raise ValueError("a load needs a positive rate and at least one thread")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._next = 0  # the next body to send
        self._sent = 0  # requests sent: their ids
        self._tag = uuid.uuid4().hex[:6]  # a load's ids are its own
        self.started_at = 0.0

    def start(self) -> Load:
        if not self.bodies:
            self.bodies = row_bodies()
        self.started_at = time.time()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout_s + 5)
        self._workers = []

    def window(self, since: float, until: float | None = None) -> Window:
        """The answers to requests sent in [since, until) (wall clock; until: now)."""
        end = until if until is not None else time.time()
        with self._lock:
            seen = [a for a in self.answers if since <= a.at < end]
        return Window(
            requests=len(seen),
            failed=[a for a in seen if a.status != 200],
            versions=Counter(a.version for a in seen if a.version),
            seconds=end - since,
        )

    def answered(self, since: float, until: float) -> list[Answer]:
        """The answers to requests sent in [since, until) (wall clock)."""
        with self._lock:
            return [a for a in self.answers if since <= a.at < until]

    def send(self, bodies: list[dict[str, Any]]) -> None:
        """From now on, send these bodies (in turn) instead."""
        with self._lock:
            self.bodies, self._next = bodies, 0

    def _body(self) -> tuple[int, int, dict[str, Any]]:
        """The request's number, the row it sends, its body."""
        with self._lock:
            number, row = self._sent, self._next % len(self.bodies)
            self._next += 1
            self._sent += 1
        return number, row, self.bodies[row]

    def _run(self, index: int) -> None:
        period = self.threads / self.rate
        next_at = time.monotonic() + index * period / self.threads
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                next_at = max(next_at + period, time.monotonic() - period)
                sent = time.time()
                number, row, body = self._body()
                request_id = f"load-{self._tag}-{number}"
                try:
                    response = client.post(
                        self.url, json=body, headers={"X-Request-Id": request_id}
                    )
                    answer = Answer(
                        sent,
                        response.status_code,
                        response.headers.get(VERSION_HEADER),
                        "" if response.status_code == 200 else response.text[:200],
                        request_id,
                        row,
                    )
                except httpx.HTTPError as err:
                    answer = Answer(sent, 0, None, repr(err)[:200], request_id, row)
                with self._lock:
                    self.answers.append(answer)


def main(argv: list[str] | None = None) -> int:
    """`python -m controller.dev.load URL [--rate R]`: the tour's load by hand (docs/
    getting-started.md), until SIGTERM or Ctrl-C; then one line: requests, failures, versions."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m controller.dev.load", description=main.__doc__)
    parser.add_argument("url", help="the route, e.g. http://localhost:8000/breast-cancer")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    load = Load(args.url, rate=args.rate).start()
    print(f"sending {args.rate:g} requests/s to {args.url}, one data set row each", flush=True)
    done.wait()
    load.stop()
    window = load.window(load.started_at)
    print(window.line(), flush=True)
    for answer in window.failed[:10]:  # when, and what came back instead of an answer
        print(
            f"  failed {answer.at - load.started_at:.1f}s after the start: "
            f"{answer.status or 'no answer'} {answer.error[:120]}",
            flush=True,
        )
    return 1 if window.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
