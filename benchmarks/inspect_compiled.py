"""Compile the grouped-GEMM kernels for Hopper (sm_90) on any machine — no GPU needed — and report
registers, spills, shared memory and the SASS instruction mix of each config.

    python benchmarks/inspect_compiled.py                     # heuristic decode + prefill configs
    python benchmarks/inspect_compiled.py --kernel gemm1 --config 16,64,1,4,3 --config 128,128,0,8,3

Triton compiles ahead of time for a GPUTarget and ships ptxas / cuobjdump, so the questions "is it
wgmma (HGMMA)?", "does it spill?", "how much shared-memory traffic per K step?" are answered
without spending device time. Pointer and stride arguments are marked 16-divisible, as Triton
specializes them at a real launch.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"   # compile for real even on a CPU-only machine

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tmoe.kernels import grouped_gemm as gg  # noqa: E402
from tmoe.kernels.configs import DECODE_MODES, GemmConfig  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
SASS_CLASSES = ("HGMMA", "HMMA", "LDG", "LDGSTS", "LDS", "STS", "LDSM", "BAR", "PRMT", "LOP3", "F2FP", "FMUL",
                "IMAD", "SHF", "STG", "LDL", "STL")


def _signature(kernel) -> tuple[dict, dict]:
    """Argument types by naming convention (see grouped_gemm's kernels) and 16-divisibility attrs."""
    sig, attrs = {}, {}
    params = [p for p in kernel.arg_names]
    for i, name in enumerate(params):
        if name.isupper():
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = {"x_ptr": "*i16", "act_ptr": "*i16", "out_ptr": "*i16", "offsets_ptr": "*i32",
                         "sorted_ptr": "*i32", "weights_ptr": "*fp32", "bias_ptr": "*fp32",
                         "row_addr_ptr": "*i64"}.get(name, "*u8")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("clamp", "alpha"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride") or name in ("hidden", "inter"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def compile_config(kernel_name: str, cfg: GemmConfig, e_pad: int = 512, topk: int = 8, persistent: bool = False,
                   quad: bool = False):
    kernel = gg._gemm1_swiglu_kernel if kernel_name == "gemm1" else gg._gemm2_kernel
    sig, attrs = _signature(kernel)
    const = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": gg.BLOCK_K, "E_PAD": e_pad,
             "SWAP_AB": cfg.swap_ab, "SOFT": False, "DECODE": cfg.decode_mode, "HAS_BIAS": False,
             "PERSISTENT": persistent, "QUAD": quad}
    if kernel_name == "gemm1":
        const.update(TOPK=topk, HAS_CLAMP=False, FAST_MATH=True, ACTIVATION=0, FUSE_GATE_UP=cfg.fuse_gate_up)
    else:
        const.update(ROW_ADDR=False)
    src = ASTSource(kernel, sig, const, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **cfg.launch_options})


def describe(compiled) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    ops = collections.Counter(m.group(1).split(".")[0] for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?P\d+\s+)?([A-Z0-9_.]+)", sass))
    return {"regs": int(regs.group(1)) if regs else None, "stack": int(stack.group(1)) if stack else None,
            "shared": compiled.metadata.shared, **{c: ops.get(c, 0) for c in SASS_CLASSES}}


def parse_config(text: str) -> GemmConfig:
    parts = text.split(",")
    bm, bn, swap, warps, stages = (int(p) for p in parts[:5])
    decode = parts[5] if len(parts) > 5 else "asm"
    fuse = len(parts) > 6 and parts[6] in ("1", "fuse")
    return GemmConfig(bm, bn, bool(swap), warps, stages, decode, fuse_gate_up=fuse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=["gemm1", "gemm2", "both"], default="both")
    ap.add_argument("--quad", action="store_true", help="weights in the quad byte order (weight_layout.py)")
    ap.add_argument("--config", action="append", default=None,
                    help=f"bm,bn,swap,warps,stages[,decode in {DECODE_MODES}[,fuse]] (repeatable)")
    args = ap.parse_args()
    cfgs = [parse_config(c) for c in args.config] if args.config else [
        GemmConfig(16, 64, True, 4, 3), GemmConfig(16, 64, True, 4, 4), GemmConfig(16, 64, True, 4, 3, fuse_gate_up=True),
        GemmConfig(128, 128, False, 8, 3)]
    kernels = ["gemm1", "gemm2"] if args.kernel == "both" else [args.kernel]
    print("| kernel | config | regs | stack | smem B | " + " | ".join(SASS_CLASSES) + " |")
    print("|---|---|" + "---:|" * (3 + len(SASS_CLASSES)))
    for kn in kernels:
        for cfg in cfgs:
            if kn == "gemm2" and cfg.fuse_gate_up:
                continue
            d = describe(compile_config(kn, cfg, quad=args.quad))
            name = (f"bm{cfg.block_m} bn{cfg.block_n} {'swap' if cfg.swap_ab else 'noswap'} w{cfg.num_warps} "
                    f"s{cfg.num_stages} {cfg.decode}{' fused' if cfg.fuse_gate_up else ''}")
            print(f"| {kn} | {name} | {d['regs']} | {d['stack']} | {d['shared']} | "
                  + " | ".join(str(d[c]) for c in SASS_CLASSES) + " |", flush=True)


if __name__ == "__main__":
    main()
