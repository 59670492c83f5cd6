"""tmoe against OpenAI's triton_kernels (the MXFP4 MoE path vLLM runs for gpt-oss on Hopper), one card, one process.

    python benchmarks/bench_triton_kernels.py [--workloads gptoss,dsv3] [--tokens 1,8,128] [--triton-kernels DIR]

triton_kernels is not a tmoe dependency and has no wheel of its own: the script imports `triton_kernels` if it is
importable, else the copy a vLLM install carries (`vllm/third_party/triton_kernels`, found without importing vLLM),
else the directory given by `--triton-kernels` (the folder that *holds* `triton_kernels/`). It must match the
installed Triton (the copy in the triton repo at the same tag, or vLLM's for its Triton).

Both sides get the same problem: bench_layer.py's canonical MXFP4 weights (same seeds), the same bf16 tokens, the
same top-k experts and weights (triton_kernels' top-k + softmax of random router logits, as vLLM routes gpt-oss) and
gpt-oss's activation (`swiglu_oai`, alpha 1.702, clamp 7), no biases. Timed (CUDA graphs, L2 flushed, median):
* tmoe: MXFP8 quantization of the tokens + `fp8_fp4_mega_moe` (routing metadata, both GEMMs, combine): W4A8.
* triton_kernels, whole call: `routing` (top-k, sort) + `matmul_ogs` GEMM1 with the gather and the fused SwiGLU +
  `matmul_ogs` GEMM2 with the scatter and the weighted top-k sum: W4A16 (bf16 tokens; on Hopper the MXFP4 weights
  are upcast to bf16 in the kernel, the weights and scales in its Hopper swizzled layouts).
* triton_kernels, GEMMs only: the same two `matmul_ogs` calls with the routing built beforehand.
Up to --check-max-tokens each output is compared with tmoe's float64 reference on the same routing (on the MXFP8
tokens, so triton_kernels' calc_diff includes the activation quantization tmoe does and it does not), and at every T
triton_kernels' output with tmoe's: a broken setup shows as a large diff.
Writes benchmarks/results/tk-<card>-<date>.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import cell, layer_weights, print_header, roofline, write_results  # noqa: E402
from ceilings import measure_ceilings, time_eager, time_graph  # noqa: E402

import tmoe  # noqa: E402
from tmoe.reference import OAI_ALPHA, MoEWeights, calc_diff, reference_moe  # noqa: E402
from tmoe.workloads import WORKLOADS, make_routing  # noqa: E402

DEFAULT_TOKENS = (1, 8, 32, 128, 512, 2048, 8192)
OAI_CLAMP = 7.0
# NOTES: calc_diff of a correct W4A16 result against the W4A8 reference is the activation quantization's (~1e-3);
# a wrong layout or gate / up order gives ~1 (uncorrelated)
TK_DIFF_LIMIT = 1e-2


def import_triton_kernels(path: str | None = None):
    """The `triton_kernels` package: from `path` (the folder holding it), else importable as is, else vLLM's copy."""
    if path is not None:
        if not os.path.isdir(os.path.join(path, "triton_kernels")):
            raise ValueError(f"--triton-kernels {path!r}: no triton_kernels/ folder in it")
        sys.path.insert(0, path)
    elif importlib.util.find_spec("triton_kernels") is None:
        vllm = importlib.util.find_spec("vllm")     # its location only: importing vLLM pulls in its whole stack
        third_party = (os.path.join(list(vllm.submodule_search_locations)[0], "third_party")
                       if vllm is not None and vllm.submodule_search_locations else None)
        if third_party is None or not os.path.isdir(os.path.join(third_party, "triton_kernels")):
            raise ImportError("triton_kernels not found: install it from the triton repository (python/triton_kernels at "
                              "your Triton's tag), install vLLM (it carries a copy), or pass --triton-kernels DIR")
        sys.path.insert(0, third_party)
    return importlib.import_module("triton_kernels")


def gate_up_interleave(inter: int) -> torch.Tensor:
    """Row order that turns tmoe's w1 rows [gate 0..I-1 | up 0..I-1] into triton_kernels' (gate i, up i) pairs
    (its SwiGLU reads each output column pair as gate, up)."""
    return torch.stack([torch.arange(inter), inter + torch.arange(inter)], dim=1).reshape(-1)


def tk_weights(codes: torch.Tensor, scales: torch.Tensor, row_order: torch.Tensor | None = None):
    """Canonical MXFP4 (codes int8 [E, N, K/2], low nibble first; scales uint8 [E, N, K/32]) -> triton_kernels'
    weight tensor [E, K, N] in its default MXFP4 layout for this GPU and the PrecisionConfig carrying its scales."""
    from triton_kernels.matmul_ogs import FlexCtx, PrecisionConfig
    from triton_kernels.numerics import InFlexData
    from triton_kernels.tensor import FP4, convert_layout, wrap_torch_tensor
    from triton_kernels.tensor_details import layout
    if row_order is not None:
        codes, scales = codes[:, row_order.to(codes.device)], scales[:, row_order.to(codes.device)]
    # NOTES: Hopper's scale layout in the triton_kernels of Triton 3.6 wants the K groups padded to a multiple of 4
    # (vLLM pads them the same way; the padded groups scale nothing)
    scales = torch.nn.functional.pad(scales, (0, -scales.shape[-1] % 4))
    value_layout, value_opts = layout.make_default_matmul_mxfp4_w_layout(mx_axis=1)
    scale_layout, scale_opts = layout.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=8)
    w = convert_layout(wrap_torch_tensor(codes.view(torch.uint8).transpose(-2, -1), dtype=FP4), value_layout,
                       **value_opts)
    w_scale = convert_layout(wrap_torch_tensor(scales.transpose(-2, -1)), scale_layout, **scale_opts)
    return w, PrecisionConfig(weight_scale=w_scale, flex_ctx=FlexCtx(rhs_data=InFlexData()))


def tk_moe(wl, canonical):
    """The triton_kernels layer of `wl`: (route(logits) -> routing, gemms(x, routing, inter, y) -> y)."""
    from triton_kernels import swiglu
    from triton_kernels.matmul_ogs import FnSpecs, FusedActivation, matmul_ogs
    from triton_kernels.matmul_ogs_details import opt_flags
    from triton_kernels.routing import routing
    w1, w1_sf, w2, w2_sf = canonical
    tk_w1, pc1 = tk_weights(w1, w1_sf, gate_up_interleave(wl.intermediate))
    tk_w2, pc2 = tk_weights(w2, w2_sf)
    # NOTES: split-K would leave the fused SwiGLU and the scatter a partial sum to work on; vLLM pins it to 1 on Hopper
    opt_flags.update_opt_flags_constraints({"split_k": 1})
    act = FusedActivation(FnSpecs("swiglu", swiglu.swiglu_fn, ("alpha", "limit")), (OAI_ALPHA, OAI_CLAMP), 2)

    def route(logits):
        return routing(logits, wl.topk, sm_first=False)

    def gemms(x, rt, inter, y):
        rdata, gather, scatter = rt
        matmul_ogs(x, tk_w1, None, rdata, gather_indx=gather, precision_config=pc1, fused_activation=act, y=inter)
        matmul_ogs(inter.view(-1, inter.shape[-1]), tk_w2, None, rdata, scatter_indx=scatter, precision_config=pc2,
                   gammas=rdata.gate_scal, y=y)
        return y

    return route, gemms


def _last_line(exc: Exception) -> str:
    """'Type: last line of the message' (a compile error's last line says what failed), cut to 160 characters."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:160]


def _time(fn) -> tuple[float, str]:
    """(µs, how): CUDA-graph replays, or eager calls where `fn` cannot be captured (noted in the row)."""
    try:
        return time_graph(fn), "graph"
    except Exception:  # noqa: BLE001 - e.g. a host sync inside a peer's call
        torch.cuda.synchronize()
        return time_eager(fn), "eager"


def _timeline(call) -> list[dict]:
    """Per-kernel start / end / duration of `call` over graph replays (benchmarks/layer_timeline.py)."""
    from layer_timeline import timeline
    return timeline(call, replays=10)["kernels"]


def bench_workload(wl, tokens, ceil, check_max_tokens: int, timeline_tokens=(), seed: int = 0) -> list[dict]:
    from triton_kernels.topk import topk
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    canonical, (l1, l2) = layer_weights(wl)
    route, gemms = tk_moe(wl, canonical)
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, max(tokens), k, h, i)
    rows = []
    for t in tokens:
        g = torch.Generator(device="cuda").manual_seed(seed + t)
        logits = torch.randn(t, e, device="cuda", generator=g).to(torch.bfloat16)
        x = torch.randn(t, h, device="cuda", generator=g).to(torch.bfloat16)
        try:
            scal, indx, _ = topk(logits, k, apply_softmax=True)
            idx, tw, tk_error = indx[:t].long(), scal[:t].float(), None
        except Exception as exc:  # noqa: BLE001 - e.g. its top-k kernel takes power-of-2 k only (v4flash: 6)
            idx, tw = make_routing(t, e, k, "uniform", seed=seed + t)
            tk_error = f"triton_kernels' top-k failed at k = {k}: {_last_line(exc)}"
        buf.topk_idx[:t].copy_(idx)
        buf.topk_weights[:t].copy_(tw)
        y = torch.empty(t, h, dtype=torch.bfloat16, device="cuda")

        def tmoe_call():
            tmoe.per_token_cast_to_fp8(x, out=(buf.x, buf.x_sf))
            tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, activation="swiglu_oai", activation_clamp=OAI_CLAMP)

        row = {"workload": wl.name, "tokens": t,
               "routing": "triton_kernels top-k of random logits" if tk_error is None else "uniform (tmoe.workloads)"}
        tmoe_call()
        ref = None
        if t <= check_max_tokens:
            ref = reference_moe(buf.x[:t], buf.x_sf[:t], idx, tw, MoEWeights(*canonical), activation="swiglu_oai",
                                activation_clamp=OAI_CLAMP)
            row["tmoe_calc_diff"] = calc_diff(y, ref)
        row["tmoe_us"], _ = _time(tmoe_call)
        row["floor_us"] = roofline(wl, idx, ceil)["floor_us"]
        row["tmoe_efficiency"] = row["floor_us"] / row["tmoe_us"]
        if t in timeline_tokens:
            row["tmoe_timeline"] = _timeline(tmoe_call)
        try:
            if tk_error is not None:
                raise RuntimeError(tk_error)
            inter = torch.empty(1, t * k, i, dtype=torch.bfloat16, device="cuda")
            y_tk = torch.empty(1, t, h, dtype=torch.bfloat16, device="cuda")
            rt = route(logits)
            gemms(x, rt, inter, y_tk)
            torch.cuda.synchronize()
            row["tk_vs_tmoe_calc_diff"] = calc_diff(y_tk[0], y)
            if ref is not None:
                row["tk_calc_diff"] = calc_diff(y_tk[0], ref)
            row["tk_us"], row["tk_timing"] = _time(lambda: gemms(x, route(logits), inter, y_tk))
            row["tk_gemms_us"], _ = _time(lambda: gemms(x, rt, inter, y_tk))
            row["speedup"] = row["tk_us"] / row["tmoe_us"]
            row["tk_efficiency"] = row["floor_us"] / row["tk_us"]
            if t in timeline_tokens:
                row["tk_timeline"] = _timeline(lambda: gemms(x, route(logits), inter, y_tk))
            worst = max(row["tk_vs_tmoe_calc_diff"], row.get("tk_calc_diff", 0.0))
            if worst > TK_DIFF_LIMIT:
                row["tk_note"] = f"calc_diff {worst:.2e} > {TK_DIFF_LIMIT}: check the setup"
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported, the table goes on
            row["tk_note"] = tk_error or _last_line(exc)
        rows.append(row)
        print(_fmt(row), flush=True)
        for side in ("tmoe", "tk"):
            for kern in row.get(f"{side}_timeline", []):
                print(f"    {side:4} {kern['kernel'][:60]:60} {kern['start_us']:9.1f} -> {kern['end_us']:9.1f} µs "
                      f"({kern['dur_us']:.1f})", flush=True)
        del ref
        torch.cuda.empty_cache()
    buf.destroy()
    return rows


HEADER = (f"| {'workload':8} | {'T':>5} | {'tmoe µs':>8} | {'tk µs':>8} | {'tk GEMMs µs':>11} | {'tk/tmoe':>7} | "
          f"{'eff tmoe':>8} | {'eff tk':>6} | {'tmoe diff':>9} | {'tk diff':>9} |")
# tk diff: against the float64 reference up to --check-max-tokens, above it against tmoe's output


def _fmt(r: dict) -> str:
    f = cell
    eager = " (eager)" if r.get("tk_timing") == "eager" else ""
    line = (f"| {r['workload']:8} | {r['tokens']:>5} | {f(r.get('tmoe_us'), '8.1f')} | {f(r.get('tk_us'), '8.1f')} | "
            f"{f(r.get('tk_gemms_us'), '11.1f')} | {f(r.get('speedup'), '7.2f')} | {f(r.get('tmoe_efficiency'), '8.2f')} | "
            f"{f(r.get('tk_efficiency'), '6.2f')} | {f(r.get('tmoe_calc_diff'), '9.1e')} | "
            f"{f(r.get('tk_calc_diff', r.get('tk_vs_tmoe_calc_diff')), '9.1e')} |")
    return line + eager + (f" {r['tk_note']}" if r.get("tk_note") else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="gptoss,dsv3")
    ap.add_argument("--tokens", default=",".join(map(str, DEFAULT_TOKENS)))
    ap.add_argument("--triton-kernels", default=None, metavar="DIR", help="the folder that holds triton_kernels/")
    ap.add_argument("--check-max-tokens", type=int, default=128, help="float64 reference checks up to this T")
    ap.add_argument("--timeline", default="", help="token counts whose calls are also profiled kernel by kernel")
    ap.add_argument("--json", default=None, help="default: benchmarks/results/tk-<card>-<date>.json")
    args = ap.parse_args(argv)
    names = args.workloads.split(",")
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        raise ValueError(f"--workloads: unknown {bad}; known: {sorted(WORKLOADS)}")
    tokens = [int(t) for t in args.tokens.split(",")]
    if not tokens or min(tokens) < 1:
        raise ValueError(f"--tokens must be positive integers, got {args.tokens!r}")
    timeline_tokens = {int(t) for t in args.timeline.split(",") if t}
    if not torch.cuda.is_available():
        sys.exit("bench_triton_kernels.py needs a CUDA GPU (triton_kernels does not run on the Triton interpreter)")
    tk = import_triton_kernels(args.triton_kernels)
    ceil = measure_ceilings()
    dev = torch.cuda.get_device_name()
    print(f"{dev}: read {ceil['read_gbps']:.0f} GB/s, fp8 {ceil['fp8_tflops']:.0f} TFLOP/s (eff = floor / time, DESIGN.md "
          f"§6); triton_kernels from {os.path.dirname(tk.__file__)}")
    print_header(HEADER)
    rows = []
    for name in names:
        rows += bench_workload(WORKLOADS[name], tokens, ceil, args.check_max_tokens, timeline_tokens)
        torch.cuda.empty_cache()
    write_results(rows, ceil, args.json, prefix="tk-", triton_kernels=os.path.dirname(tk.__file__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
