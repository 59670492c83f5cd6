"""Compile every autotune-cache pick of the Gluon GEMMs for sm_90 offline and report what ptxas made of it: registers,
spill bytes, wgmma waits per K step, ptxas wgmma serialization (no GPU needed; issue 7: "check the SASS: HGMMA present,
no local-memory spills").

    python benchmarks/audit_picks.py                        # every card directory of autotune_cache/
    python benchmarks/audit_picks.py --device NVIDIA_H100_80GB_HBM3 --workload dsv3 --json out.json

Each pick is compiled with the constexprs its launcher passes (the launch is intercepted: the kernel's `[grid](...)`
records its keyword arguments instead of running), for the cache file's workload shape and the bucket's token count,
as a plain launch (the layer launches the first GEMM1 / GEMM2 of small calls as programmatic dependent launches, which
adds a few registers at most, NOTES "v17"), with the weights' "arith" word bits (what real checkpoints get; `--bits
signed` for weights with scales above 2^1, which take the lookup decode). Exit status 1 if a pick spills or has no
HGMMA.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"   # compile for real on a CPU-only machine

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from gluon_compile_worker import GEMM_PTRS as PTRS, K2880_UNALIGNED, compile_gluon, inspect  # noqa: E402

from tmoe.autotune import cache  # noqa: E402
from tmoe.kernels import configs, weight_layout, wgmma_gemm  # noqa: E402
from tmoe.workloads import WORKLOADS  # noqa: E402

LAUNCH_OPTIONS = ("num_warps", "maxnreg", "launch_pdl")


@dataclass
class _Plan:      # routing.RoutingPlan's fields the launchers read (pointers only: never dereferenced here)
    expert_offsets: torch.Tensor
    sorted_slots: torch.Tensor
    num_slots: int


class _Recorder:
    """Stands in for a Gluon kernel: `kernel[grid](*args, **kwargs)` records the keyword arguments."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(kwargs)


def _weights(e: int, n: int, k: int):
    """Codes int8 [e, n, k/2] and scales uint8 [e, n, k/32] with the layer's row padding (weight_layout.pad_scale_rows),
    values never read (only shapes and strides matter)."""
    return (torch.empty(e, n, k // 2, dtype=torch.int8),
            weight_layout.pad_scale_rows(torch.empty(e, n, k // 32, dtype=torch.uint8)))


def launch_kwargs(gemm: str, cfg, workload, tokens: int, bits: str = "arith") -> list[dict]:
    """The constexpr keyword arguments of every launch the launcher would make for `cfg` (a tail config: two), for
    tiled weights with the word bits `bits` (weight_layout.WORD_BITS: "arith", what the layer uses for weights whose
    scales are all <= 2^1, i.e. real checkpoints; "signed" otherwise)."""
    quad = {"arith": 2, "signed": 1}[bits]
    e, k, h, i = workload.num_experts, workload.topk, workload.hidden, workload.intermediate
    slots = tokens * k
    plan = _Plan(torch.zeros(e + 1, dtype=torch.int32), torch.zeros(slots, dtype=torch.int32), slots)
    name = "_gemm1_wgmma_kernel" if gemm == "gemm1" else "_gemm2_wgmma_kernel"
    original, is_hopper = getattr(wgmma_gemm, name), configs.is_hopper
    recorder = _Recorder()
    setattr(wgmma_gemm, name, recorder)
    configs.is_hopper = lambda device: True     # _check asks the tensors' device
    try:
        if gemm == "gemm1":
            w, sf = _weights(e, 2 * i, h)
            wgmma_gemm.gemm1_swiglu_wgmma(torch.empty(slots, h, dtype=torch.int16), w, sf, plan,
                                          torch.empty(tokens, k), torch.empty(slots, i, dtype=torch.int16), topk=k,
                                          clamp=workload.clamp, fast_math=True, cfg=cfg, quad=quad, tiled=True,
                                          x_rows=torch.empty(slots, h, dtype=torch.int16) if cfg.tma_b else None)
        else:
            w, sf = _weights(e, h, i)
            wgmma_gemm.gemm2_wgmma(torch.empty(slots, i, dtype=torch.int16), w, sf, plan,
                                   torch.empty(slots, h, dtype=torch.int16), cfg=cfg, quad=quad, tiled=True)
    finally:
        setattr(wgmma_gemm, name, original)
        configs.is_hopper = is_hopper
    return recorder.calls


def audit(gemm: str, cfg, workload, tokens: int, bits: str = "arith") -> list[dict]:
    kernel = wgmma_gemm._gemm1_wgmma_kernel if gemm == "gemm1" else wgmma_gemm._gemm2_wgmma_kernel
    unaligned = K2880_UNALIGNED if (workload.hidden if gemm == "gemm1" else workload.intermediate) % 128 else set()
    out = []
    for kwargs in launch_kwargs(gemm, cfg, workload, tokens, bits):
        ptrs = dict(PTRS[gemm])
        if kwargs.get("b_desc") is not None:       # GemmConfig.tma_b: the activation rows' TMA descriptor
            from triton.runtime.jit import mangle_type
            ptrs["b_desc"] = mangle_type(kwargs["b_desc"])
        const = {n: v for n, v in kwargs.items() if n not in LAUNCH_OPTIONS and n not in ptrs}
        compiled = compile_gluon(kernel, ptrs, {"clamp", "alpha"}, const, kwargs["num_warps"], unaligned,
                                 maxnreg=kwargs.get("maxnreg"))
        info = inspect(compiled, 0)
        out.append({"regs": info["regs"], "spills": info["spills"], "hgmma": info["hgmma"],
                    "wgmma_waits": info["wgmma_waits"], "serialized": info["serialized"],
                    "shared": compiled.metadata.shared, "block_m": const["BLOCK_M"]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT / "autotune_cache"))
    ap.add_argument("--device", default=None, help="a card directory name (default: all)")
    ap.add_argument("--workload", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--bits", default="arith", choices=("arith", "signed"),
                    help="the weights' word bits (weight_layout.WORD_BITS; the layer picks arith for scales <= 2^1)")
    args = ap.parse_args()
    shapes = {(w.num_experts, w.hidden, w.intermediate, w.topk): w for w in WORKLOADS.values()}
    rows, bad = [], 0
    for path in sorted(Path(args.root).glob("*/*.json")):
        if args.device and path.parent.name != args.device:
            continue
        doc = cache.load(path)
        wl = shapes.get((doc["num_experts"], doc["hidden"], doc["intermediate"], doc["topk"]))
        if wl is None or (args.workload and wl.name != args.workload):
            continue
        for tokens, bucket in sorted(doc["buckets"].items(), key=lambda kv: int(kv[0])):
            cfg = cache.config_from_dict(bucket["best"]["config"])
            if cfg.kernel != "gluon":
                continue
            for launch in audit(doc["kernel"], cfg, wl, int(tokens), args.bits):
                row = dict(device=path.parent.name, workload=wl.name, gemm=doc["kernel"], tokens=int(tokens),
                           config=cache.config_to_dict(cfg), **launch)
                rows.append(row)
                flag = launch["spills"] > 0 or launch["hgmma"] == 0 or launch["serialized"]
                bad += flag
                print(f"{'!!' if flag else '  '} {path.parent.name[:22]:22} {wl.name:8} {doc['kernel']} T={tokens:>5} "
                      f"bm{launch['block_m']} bn{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages} k_loop={cfg.k_loop} "
                      f"ahead={cfg.ring_lookahead} "
                      f"cap={cfg.maxnreg}: regs {launch['regs']} spills {launch['spills']} B hgmma {launch['hgmma']} "
                      f"waits {launch['wgmma_waits']} smem {launch['shared']}", flush=True)
    print(f"{len(rows)} launches compiled, {bad} with spills, no HGMMA or serialized wgmmas")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
