"""Run the test suite as parallel pytest processes on one GPU machine, sharded so the slow GPU tests spread out.

    python benchmarks/run_gpu_tests.py                       # every test file but the EP ones, 8 processes
    python benchmarks/run_gpu_tests.py --procs 6 --timeout 480 --out /tmp/t tests/test_gluon_gemm.py

Why: on a GPU most of the suite's time is Triton compiling Gluon kernels (the bitwise matrix compiles ~38 configs
per shape), which is CPU work; one pytest process ran ~50% of the single-GPU suite in a 420 s device call, seven
hand-made shards on the same 16 cores 96% of it in 382 s, this script's eight shards six of theirs (661 tests) in
<= 295 s before the device budget ran out (NOTES "v24"). The tests are unchanged (the same files CI runs on CPU);
only the split is new. Every test of the files named in HEAVY is its own unit, every other
file one unit; units go to the least loaded shard, largest first. Each shard writes <out>/shard-<n>.txt; the
summary lists each shard's pytest result line, and the exit status is non-zero if any shard failed or timed out.
The EP files (tests/test_ep_*.py) want 2-4 GPUs: benchmarks/run_ep_suite.sh runs them.
The shards run hypothesis's `ci` profile (12 examples per property) so the whole suite fits one device call; the
property tests alone with the `gpu` profile (100 examples each, 18 tests) took 84 s in four parallel shards on an
H100 (`results/final-2026-11-28-s23/run6.sh`): `TMOE_HYPOTHESIS_PROFILE=gpu python benchmarks/run_gpu_tests.py <node ids>`.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import time

# NOTES: relative cost of one test of these files (measured on an H100, session 20: the bitwise matrix's first case
# of a shape 60-80 s, the others 2-45 s; test_layer.py 1-32 s; test_compile_sm90.py compiles every Gluon variant and
# shipped pick for sm_90 offline, minutes of CPU each), every other test costs 1 and stays with its file
HEAVY = {"tests/test_gluon_gemm.py": 20.0, "tests/test_pdl.py": 10.0, "tests/test_layer.py": 4.0,
         "tests/test_tma_copy.py": 2.0, "tests/test_activation_oai.py": 4.0, "tests/test_compile_sm90.py": 60.0}


def collect(paths: list[str], exclude: list[str]) -> list[str]:
    """The node ids pytest collects under `paths`, minus files matching an `exclude` glob."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
                         capture_output=True, text=True)
    ids = [line.strip() for line in run.stdout.splitlines() if "::" in line]
    if run.returncode != 0 or not ids:     # a file that fails to import must not vanish from the run
        raise SystemExit(f"pytest collection under {paths} failed (rc={run.returncode}):\n{run.stdout[-3000:]}"
                         f"{run.stderr[-2000:]}")
    return [i for i in ids if not any(fnmatch.fnmatch(i.split("::")[0], pat) for pat in exclude)]


def shards(ids: list[str], procs: int, heavy: dict[str, float] = HEAVY) -> list[list[str]]:
    """Split node ids into at most `procs` shards of similar cost (see the module docstring), in collection order
    within a shard."""
    if procs < 1:
        raise ValueError(f"procs must be >= 1, got {procs}")
    units: dict[str, list[str]] = {}
    cost: dict[str, float] = {}
    for i in ids:
        path = i.split("::")[0]
        key = i if path in heavy else path
        units.setdefault(key, []).append(i)
        cost[key] = cost.get(key, 0.0) + heavy.get(path, 1.0)
    loads = [0.0] * procs
    out: list[list[str]] = [[] for _ in range(procs)]
    for key in sorted(units, key=lambda k: -cost[k]):
        n = loads.index(min(loads))
        loads[n] += cost[key]
        out[n] += units[key]
    order = {i: n for n, i in enumerate(ids)}
    return [sorted(s, key=order.__getitem__) for s in out if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", default=["tests"])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds for all shards together")
    ap.add_argument("--out", default="/tmp/tmoe-tests")
    ap.add_argument("--exclude", action="append", default=None, help="file glob (default: tests/test_ep_*.py)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    parts = shards(collect(args.paths, args.exclude or ["tests/test_ep_*.py"]), args.procs)
    env = dict(os.environ, TMOE_HYPOTHESIS_PROFILE=os.environ.get("TMOE_HYPOTHESIS_PROFILE", "ci"))
    start = time.monotonic()
    running = []
    for n, part in enumerate(parts):
        log = open(os.path.join(args.out, f"shard-{n}.txt"), "w")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", *part]
        running.append((n, len(part), log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
    print(f"{sum(len(p) for p in parts)} tests in {len(parts)} shards", flush=True)
    while any(p.poll() is None for *_, p in running) and time.monotonic() - start < args.timeout:
        time.sleep(2)
    ok = True
    for n, count, log, proc in running:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        with open(log.name) as f:
            tail = [line.strip() for line in f if line.strip()]
        result = next((line for line in reversed(tail) if " passed" in line or " failed" in line
                       or " error" in line), tail[-1] if tail else "(no output)")
        status = "timed out" if proc.returncode < 0 else f"rc={proc.returncode}"
        ok &= proc.returncode == 0
        print(f"shard {n} ({count} tests): {status}: {result}", flush=True)
    print(f"{'all shards passed' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
