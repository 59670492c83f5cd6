"""Benchmark the whole layer (quantize + route + GEMM1/SwiGLU/requant + GEMM2 + combine), EP = 1.

    python benchmarks/bench_layer.py [--workloads dsv3,gptoss] [--tokens 1,128,8192] [--routing uniform,zipf]

Per DESIGN.md §6: CUDA-graph replays (median, L2 flushed), the card's ceilings and the two torch
grouped-GEMM peers (bf16 `torch._grouped_mm`, fp8 rowwise `torch._scaled_grouped_mm`; GEMMs only)
measured in the same process on the same routing. Writes benchmarks/results/<card>-<date>.json and
prints a markdown table. Small-T rows are also checked against the float64 reference.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceilings import measure_ceilings, time_graph  # noqa: E402
from tmoe.workloads import TOKENS, WORKLOADS, make_routing, random_mxfp4_weights  # noqa: E402

import tmoe  # noqa: E402
from tmoe.compute import ExpertOptions, gemm_configs  # noqa: E402
from tmoe.reference import MoEWeights, calc_diff, reference_moe  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _peer_times(wl, idx, x_bf16) -> tuple[float | None, float | None, str]:
    """GEMM1 + GEMM2 of the torch grouped-GEMM peers on the same routing (no activation)."""
    e, h, i = wl.num_experts, wl.hidden, wl.intermediate
    valid = idx[idx >= 0]
    counts = torch.bincount(valid, minlength=e)
    # NOTES: torch's grouped GEMMs want 16-row-aligned groups; pad each expert's rows (a few % extra work).
    padded = (counts + 15) // 16 * 16
    offs = torch.cumsum(padded, 0).to(torch.int32)
    m = int(offs[-1])
    a1 = torch.randn(m, h, device="cuda", dtype=torch.bfloat16)
    a2 = torch.randn(m, i, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(e, 2 * i, h, device="cuda", dtype=torch.bfloat16)
    w2 = torch.randn(e, h, i, device="cuda", dtype=torch.bfloat16)
    note = ""
    try:
        bf16_us = time_graph(lambda: (torch._grouped_mm(a1, w1.transpose(1, 2), offs=offs),
                                      torch._grouped_mm(a2, w2.transpose(1, 2), offs=offs)))
    except Exception as exc:  # noqa: BLE001 - report and carry on
        bf16_us, note = None, f"bf16 grouped failed: {exc!s:.80}"
    f1, f2 = w1.to(torch.float8_e4m3fn), w2.to(torch.float8_e4m3fn)
    del w1, w2
    q1, q2 = a1.to(torch.float8_e4m3fn), a2.to(torch.float8_e4m3fn)
    s1, s2 = torch.ones(m, device="cuda"), torch.ones(m, device="cuda")
    sw1, sw2 = torch.ones(e, 2 * i, device="cuda"), torch.ones(e, h, device="cuda")
    try:
        fp8_us = time_graph(lambda: (
            torch._scaled_grouped_mm(q1, f1.transpose(1, 2), s1, sw1, offs=offs, out_dtype=torch.bfloat16),
            torch._scaled_grouped_mm(q2, f2.transpose(1, 2), s2, sw2, offs=offs, out_dtype=torch.bfloat16)))
    except Exception as exc:  # noqa: BLE001
        fp8_us, note = None, note + f" fp8 grouped failed: {exc!s:.80}"
    del f1, f2, a1, a2, q1, q2
    torch.cuda.empty_cache()
    return bf16_us, fp8_us, note.strip()


def _config_str(cfg) -> str:
    """GemmConfig -> 'gluon 8x32 w4 s3' (+ ' tail32', ' sub64', ' tq', ' nfast', ' overlap', ' maxnreg128'): which tile
    config the cache or heuristic picked."""
    return (f"{cfg.kernel} {cfg.block_m}x{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}"
            + ("" if cfg.swap_ab else " noswap") + (f" tail{cfg.tail_block_m}" if cfg.tail_block_m else "")
            + (f" sub{cfg.sub_block_m}" if cfg.sub_block_m else "")
            + (" tq" if getattr(cfg, "three_quarter", False) else "")
            + ("" if cfg.n_fastest is None else (" nfast" if cfg.n_fastest else " tilefast"))
            + (f" group{cfg.group_m}" if cfg.group_m else "")
            + (" overlap" if cfg.overlap else "") + (f" maxnreg{cfg.maxnreg}" if cfg.maxnreg else ""))


def layer_weights(wl):
    """Random canonical MXFP4 weights of `wl` (seeded) and their transformed layer form:
    ((w1, w1_sf, w2, w2_sf), (l1, l2))."""
    w1, w1_sf = random_mxfp4_weights(wl.num_experts, 2 * wl.intermediate, wl.hidden, seed=1)
    w2, w2_sf = random_mxfp4_weights(wl.num_experts, wl.hidden, wl.intermediate, seed=2)
    return (w1, w1_sf, w2, w2_sf), tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))


def layer_call(wl, l1, l2, buf, num_tokens: int, routing: str):
    """The benchmarked call at `num_tokens` (quantize the bf16 input into `buf`, then the layer) and its
    inputs: (call, topk_idx, topk_weights, x_bf16, y). Routing seeded by the token count. `call(**kw)` passes kw
    (e.g. gemm1_config) to the layer."""
    idx, tw = make_routing(num_tokens, wl.num_experts, wl.topk, routing, seed=num_tokens)
    x = torch.randn(num_tokens, wl.hidden, device="cuda").to(torch.bfloat16)
    buf.topk_idx[:num_tokens].copy_(idx)
    buf.topk_weights[:num_tokens].copy_(tw)
    y = torch.empty(num_tokens, wl.hidden, dtype=torch.bfloat16, device="cuda")

    def call(**layer_kwargs):
        tmoe.per_token_cast_to_fp8(x, out=(buf.x, buf.x_sf))
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, activation_clamp=wl.clamp, **layer_kwargs)

    return call, idx, tw, x, y


def roofline(wl, idx, ceil) -> dict:
    """DESIGN.md §6's floor of one call routed by `idx`: the touched experts' MXFP4 bytes at the measured read rate,
    or the routed slots' flops at the measured dense fp8 rate, whichever is longer."""
    touched = int(torch.unique(idx[idx >= 0]).numel())
    slots = int((idx >= 0).sum())
    weight_bytes = touched * 3 * wl.hidden * wl.intermediate * (0.5 + 1 / 32)
    flops = 2 * 3 * wl.hidden * wl.intermediate * slots
    floor_us = max(weight_bytes / ceil["read_gbps"] / 1e3, flops / ceil["fp8_tflops"] / 1e6)
    return dict(experts_touched=touched, weight_bytes=weight_bytes, flops=flops, floor_us=floor_us)


def bench_workload(wl, tokens, routings, ceil, peers: bool, check_max_tokens: int) -> list[dict]:
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    (w1, w1_sf, w2, w2_sf), (l1, l2) = layer_weights(wl)
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, max(tokens), k, h, i)
    rows = []
    for routing in routings:
        for t in tokens:
            call, idx, tw, x, y = layer_call(wl, l1, l2, buf, t, routing)
            call()
            torch.cuda.synchronize()
            row = {"workload": wl.name, "tokens": t, "ep": 1, "routing": routing}
            row["gemm1_config"], row["gemm2_config"] = (_config_str(c) for c in gemm_configs(
                ExpertOptions(), t * k, e, y.device, False, num_experts=e, hidden=h, intermediate=i, topk=k))
            if t <= check_max_tokens:
                ref = reference_moe(buf.x[:t], buf.x_sf[:t], idx, tw, MoEWeights(w1, w1_sf, w2, w2_sf),
                                    activation_clamp=wl.clamp)
                row["calc_diff"] = calc_diff(y, ref)
                row["nan"] = bool(torch.isnan(y).any())
            us = time_graph(call)
            roof = roofline(wl, idx, ceil)
            row.update(us=us, tflops=roof["flops"] / us / 1e6, weight_gbps=roof["weight_bytes"] / us / 1e3,
                       experts_touched=roof["experts_touched"], floor_us=roof["floor_us"],
                       efficiency=roof["floor_us"] / us)
            if peers:
                row["bf16_grouped_us"], row["fp8_grouped_us"], note = _peer_times(wl, idx, x)
                if note:
                    row["peer_note"] = note
            rows.append(row)
            print(_fmt(row), flush=True)
    buf.destroy()
    return rows


HEADER = (f"| {'workload':8} | {'T':>5} | routing | {'µs':>8} | {'TFLOP/s':>7} | {'wGB/s':>6} | {'eff':>5} | "
          f"{'bf16 grp µs':>11} | {'fp8 grp µs':>10} | {'calc_diff':>9} |")


def cell(v, spec: str) -> str:
    """A table cell: `v` formatted, or a dash where there is no number."""
    return format(v, spec) if isinstance(v, (int, float)) else "—"


def print_header(header: str) -> None:
    """A markdown table's header line and the rule under it."""
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")


def write_results(rows: list[dict], ceil: dict, path: str | None, prefix: str = "", **extra) -> str:
    """The run's JSON (device, versions, date, the ceilings, `extra`, rows) at `path`, default
    benchmarks/results/<prefix><card>-<date>.json; returns the path."""
    dev = torch.cuda.get_device_name()
    out = {"device": dev, "torch": torch.__version__, "triton": __import__("triton").__version__, **extra,
           "date": datetime.date.today().isoformat(), **ceil, "rows": rows}
    path = path or os.path.join(HERE, "results", f"{prefix}{dev.replace(' ', '_')}-{out['date']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")
    return path


def _fmt(r: dict) -> str:
    f = cell
    return (f"| {r['workload']:8} | {r['tokens']:>5} | {r['routing']:7} | {f(r['us'], '8.1f')} | {f(r['tflops'], '7.1f')} | "
            f"{f(r['weight_gbps'], '6.0f')} | {f(r['efficiency'], '5.2f')} | {f(r.get('bf16_grouped_us'), '11.1f')} | "
            f"{f(r.get('fp8_grouped_us'), '10.1f')} | {f(r.get('calc_diff'), '9.1e')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--routing", default="uniform")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--check-max-tokens", type=int, default=128)
    ap.add_argument("--json", default=None, help="default: benchmarks/results/<card>-<date>.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_layer.py needs a CUDA GPU (the README's run command covers CPU)")
    ceil = measure_ceilings()
    dev = torch.cuda.get_device_name()
    print(f"{dev}: read {ceil['read_gbps']:.0f} GB/s, copy {ceil['copy_gbps']:.0f} GB/s, "
          f"fp8 {ceil['fp8_tflops']:.0f} TFLOP/s, bf16 {ceil['bf16_tflops']:.0f} TFLOP/s")
    print_header(HEADER)
    tokens = [int(t) for t in args.tokens.split(",")]
    rows = []
    for name in args.workloads.split(","):
        rows += bench_workload(WORKLOADS[name], tokens, args.routing.split(","), ceil, not args.no_peers,
                               args.check_max_tokens)
        torch.cuda.empty_cache()
    write_results(rows, ceil, args.json)


if __name__ == "__main__":
    main()
