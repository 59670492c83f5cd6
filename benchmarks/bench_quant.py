"""Time the Triton MXFP8 quantizer against a 2 GiB device-to-device copy in the same run.

    python benchmarks/bench_quant.py [--json out.json]

GB/s counts bytes read (bf16 x) plus bytes written (E4M3 values + packed scales).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceilings import measure_ceilings, time_graph  # noqa: E402

import tmoe  # noqa: E402
from tmoe import formats  # noqa: E402

SHAPES = [(128, 7168), (8192, 7168), (32768, 7168), (8192, 2880)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_quant.py needs a CUDA GPU")
    ceil = measure_ceilings()
    rows = []
    for t, h in SHAPES:
        x = torch.randn(t, h, device="cuda").to(torch.bfloat16)
        q = torch.empty(t, h, dtype=torch.float8_e4m3fn, device="cuda")
        sf = torch.empty(t, formats.packed_scale_words(h), dtype=torch.int32, device="cuda")
        rq, rsf = formats.quantize_mxfp8(x)
        tmoe.per_token_cast_to_fp8(x, out=(q, sf))
        exact = torch.equal(q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(sf, rsf)
        us = time_graph(lambda: tmoe.per_token_cast_to_fp8(x, out=(q, sf)), flush=False)
        torch_us = time_graph(lambda: formats.quantize_mxfp8(x), flush=False)
        nbytes = x.numel() * 2 + q.numel() + sf.numel() * 4
        gbps = nbytes / us / 1e3
        rows.append({"tokens": t, "hidden": h, "us": us, "gbps": gbps, "copy_fraction": gbps / ceil["copy_gbps"],
                     "torch_us": torch_us, "bitwise_equal": exact})
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": __import__("triton").__version__, **ceil, "rows": rows}
    print(f"{out['device']}: copy {ceil['copy_gbps']:.0f} GB/s, read {ceil['read_gbps']:.0f} GB/s")
    print(f"{'T x H':>14} {'us':>9} {'GB/s':>7} {'of copy':>8} {'torch us':>9} exact")
    for r in rows:
        print(f"{r['tokens']:>7} x {r['hidden']:<5} {r['us']:9.1f} {r['gbps']:7.0f} {r['copy_fraction']:8.2f} "
              f"{r['torch_us']:9.1f} {r['bitwise_equal']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
