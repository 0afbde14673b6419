"""Validating hostile deployment files: time and peak memory, each in its own child process.

Cases: an 8-level YAML alias bomb (billion laughs, 9**8 leaves), 100,000 levels of flow nesting
(`[[[...]]]`), 100,000 of flow mappings (`{a: {a: ...}}`), a 20 MB file, and a Latin-1 file;
against the baseline of one valid deployment file. For each, a fresh child process imports
serveops, then times `load_manifests` (the validation `serveops validate`, `plan` and the
controller run) and reports its own peak RSS (which includes the interpreter and its imports:
compare with the baseline's). A second row per case runs the real `serveops validate` command
as a process: wall time and peak RSS, start-up included.

Each child runs under a 4 GB address-space limit and a 300 s timeout, so running this on code
without the limits fails the case instead of the machine.

Last, what the limits cost valid files: 1,000 deployment files parsed with `load_yaml` (the
event-stream count included), against the count alone (`check_cost`), in this process.

    .venv/bin/python bench/hostile_yaml.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVEOPS = str(Path(sys.executable).with_name("serveops"))
LIMIT = 4 * 1024**3
TIMEOUT_S = 300
VALID = """\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: fraud
  environment: staging
  owner: risk-team
spec:
  route: /fraud
  model: models:/fraud/1
  replicas: 1
"""


def alias_bomb(levels: int = 8, width: int = 9) -> bytes:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


CASES = {
    "valid file (baseline)": lambda: VALID.encode(),
    "alias bomb, 8 levels": alias_bomb,
    "100,000 nested sequences": lambda: b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "100,000 nested mappings": lambda: b"{a: " * 100_000 + b"1" + b"}" * 100_000 + b"\n",
    "20 MB file": lambda: VALID.encode() + b"# " + b"x" * (20 * 1024 * 1024) + b"\n",
    "Latin-1 file": lambda: VALID.replace("risk-team", "équipe").encode("latin-1"),
}


def child(case: str, path: str) -> None:
    """In the child: import, then time the validation of the file at `path`."""
    from controller.errors import ValidationFailed
    from controller.source.git import read_worktree
    from controller.spec.manifest import load_manifests

    started = time.perf_counter()
    outcome = "valid"
    try:
        load_manifests(read_worktree([Path(path)]))
    except ValidationFailed as err:
        outcome = err.problems[0].message[:70]
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "outcome": outcome}))


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run(argv: list[str]) -> tuple[float, float, int | None, str]:
    """(wall seconds, the child's own peak RSS in MB, return code or None on timeout, stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.DEVNULL, preexec_fn=_limited, cwd=ROOT
        )
        timer = threading.Timer(TIMEOUT_S, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, not all children's
        seconds = time.perf_counter() - started
        timed_out = not timer.is_alive()
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return seconds, usage.ru_maxrss / 1024, None if timed_out else proc.returncode, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}")
    print(f"{'case':<28} {'validate s':>11} {'child RSS MB':>13}   serveops validate (process)")
    with tempfile.TemporaryDirectory() as tmp:
        for case, make in CASES.items():
            folder = Path(tmp) / case.replace(" ", "_").replace(",", "") / "deployments/staging"
            folder.mkdir(parents=True)
            path = folder / "file.yaml"
            path.write_bytes(make())
            inner, rss, outcome = [], [], ""
            for _ in range(args.repeat):
                _, _, code, out = run([sys.executable, __file__, "--child", case, str(path)])
                if code != 0 or not out:
                    inner.append(float("nan"))
                    outcome = f"child failed (exit {code})"
                    continue
                figures = json.loads(out)
                inner.append(figures["seconds"])
                rss.append(figures["rss_mb"])
                outcome = figures["outcome"]
            cli = [run([SERVEOPS, "validate", str(folder.parent)]) for _ in range(args.repeat)]
            cli_s = statistics.median(c[0] for c in cli)
            cli_mb = statistics.median(c[1] for c in cli)
            codes = "/".join(str(c) for c in sorted({c[2] for c in cli}, key=str))
            print(
                f"{case:<28} {statistics.median(inner):>11.4f} "
                f"{statistics.median(rss) if rss else float('nan'):>13.1f}   "
                f"{cli_s:>6.2f} s {cli_mb:>6.1f} MB exit {codes}"
            )
            print(f"{'':<28} -> {outcome}")
    overhead(args.repeat)


def overhead(repeat: int) -> None:
    """Share of `load_yaml`'s time on valid files that the event-stream count takes."""
    sys.path.insert(0, str(ROOT))
    from controller.spec.yamldoc import check_cost, load_yaml

    texts = [VALID.replace("fraud", f"model-{i}") for i in range(1000)]
    whole, scan = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        for i, text in enumerate(texts):
            load_yaml(f"f{i}.yaml", text)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        for text in texts:
            check_cost(text)
        scan.append(time.perf_counter() - started)
    w, c = statistics.median(whole), statistics.median(scan)
    print(
        f"1,000 valid files: load_yaml {w * 1000:.0f} ms, of which the count {c * 1000:.0f} ms "
        f"({100 * c / w:.0f}%)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(sys.argv[2], sys.argv[3])
    else:
        main()
