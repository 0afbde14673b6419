"""What shipping the serving code costs: a new version's start with a py_modules bundle versus
with the code installed on the node.

On a real local Ray Serve (2 CPUs) with a real MLflow store, one deployment moves between two
model versions with `serveops apply`, in two modes that differ only in `--serving-code`:

- installed: the node's Python has serveops (the venv).
- bundle: `file://.../serveops-<version>.zip`, built by `serveops bundle`: Ray unpacks it (once
  per URI and node, then cached) and starts replicas in a worker with it on PYTHONPATH.

Each trial resets to the old version in the same mode (so only the new version's application
starts), then times from `serveops apply` to the first answer by the new version. Modes
alternate which goes first. Trial 0 is a warm-up, left out of the medians; its bundle run is
the cold one (Ray downloads and unpacks the bundle), printed apart. Prints the ratio of medians bundle / installed.

    .venv/bin/python bench/serving_code.py [--trials 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.commit_to_serving import measure, reset, set_up
from bench.serving_setup import load_average
from controller.cluster.serving_code import build_bundle
from controller.dev.localray import LocalRay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalRay(num_cpus=2) as ray:
        root = Path(tmp)
        bench = set_up(root, ray)
        modes = {"installed": "installed", "bundle": f"file://{build_bundle(root / 'dist')}"}
        results: dict[str, list[float]] = {m: [] for m in modes}
        cold = 0.0
        print(f"load average at start: {load_average()}", flush=True)
        # Trial 0 warms both modes up; its bundle run is the cold one (download and unpack).
        for trial in range(args.trials + 1):
            order = ["installed", "bundle"] if trial % 2 else ["bundle", "installed"]
            for mode in order:
                code = ("--serving-code", modes[mode])
                reset(bench, ray, *code)  # the old version in the same mode: only one app starts
                cmd = bench.apply_cmd(bench.new_commit, *code)
                t, steps = measure(cmd, bench.env, bench.url, bench.v_new, ray.address)
                if trial == 0:
                    cold = t if mode == "bundle" else cold
                else:
                    results[mode].append(t)
                label = f"{mode} (first)" if trial == 0 else mode
                print(
                    f"trial {trial}: {label:<17} {t:6.2f} s to the new version answering"
                    f" (RUNNING at {steps.get('running', float('nan')):.2f} s)",
                    flush=True,
                )
        medians = {m: statistics.median(ts) for m, ts in results.items()}
        for mode, ts in results.items():
            print(f"{mode:<10} median {medians[mode]:.2f} s ({', '.join(f'{t:.2f}' for t in ts)})")
        print(f"bundle, first use (download and unpack): {cold:.2f} s")
        print(f"ratio bundle / installed: {medians['bundle'] / medians['installed']:.2f}")
        print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
