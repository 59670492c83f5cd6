"""The benchmark scripts stay runnable: their CPU smoke modes (times mean nothing under the
interpreter) run end to end and write the results JSON with the fields DESIGN.md §6 / issue 4 name."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke mode; GPUs run the real benchmark")
def test_bench_ep_cpu_smoke(tmp_path):
    out = tmp_path / "ep.json"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_ep.py"), "--ranks", "2",
                          "--device", "cpu", "--workload", "tiny", "--tokens", "0,3", "--reps", "1",
                          "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["tokens"] for r in rows] == [0, 3]
    for row in rows:
        assert row["ep"] == 2 and row["transport"] == "collective"
        for key in ("us", "dispatch_us", "combine_us", "nccl_a2a_us", "offrank_gbps"):
            assert key in row and row[key] == row[key], key      # present and not NaN
