"""Offline probe (no GPU): can Triton 3.6's Gluon overlap an in-register weight decode with the
previous K step's async wgmma, with the decoded weights as the register A operand (swap-AB)?

    python benchmarks/experiments/gluon_overlap_probe.py

Compiles a toy K loop for sm_90 — load code bytes, decode to bf16 in registers (a stand-in
decode, NOT the MXFP4 format), convert to the wgmma A-operand layout, stage the activation tile in
a double-buffered NVMMA shared buffer, then `warpgroup_mma_wait(0)` for the previous step's MMA and
issue this step's MMA asynchronously — and prints where the wgmma waits sit in the SASS and the
ptxas diagnostics. Finding (2026-11-27): ~580 instructions of decode/staging run between a step's
HGMMA batch and the `WARPGROUP.DEPBAR` that waits for it (the overlap the Triton kernels lack: they
wait right after each step's MMAs), the A operand stays in registers (`HGMMA ... R92, gdesc[..]`),
and no C7515 "wgmma serialized" warning. Waiting for 1 outstanding MMA *after* issuing instead
makes ptxas serialize every wgmma (C7515), and an async `warpgroup_mma` result must be loop-carried
as the accumulator token, so the first MMA is peeled out of the loop.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import (  # noqa: E402
    fence_async_shared, warpgroup_mma, warpgroup_mma_wait)

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


@gluon.jit
def _toy_decode(c, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, a_layout: gl.constexpr):
    """Stand-in for the FP4 decode: low and high nibble of each byte -> two bf16 values."""
    lo = (c & 7).to(gl.float32) * gl.where((c & 8) != 0, -0.5, 0.5)
    hi = ((c >> 4) & 7).to(gl.float32) * gl.where((c & 128) != 0, -0.5, 0.5)
    w = gl.reshape(gl.join(lo, hi), [BLOCK_N, BLOCK_K]).to(gl.bfloat16)
    return gl.convert_layout(w, a_layout)


@gluon.jit
def overlap_probe(codes_ptr, act_ptr, out_ptr, K, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr,
                  BLOCK_K: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, BLOCK_M, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    code_layout: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [4, 1], [1, 0])
    act_layout: gl.constexpr = gl.BlockedLayout([1, 8], [16, 2], [4, 1], [1, 0])
    b_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_K, BLOCK_M], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [2, BLOCK_K, BLOCK_M], b_layout)
    rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, code_layout))
    cols = gl.arange(0, BLOCK_K // 2, layout=gl.SliceLayout(0, code_layout))
    krows = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(1, act_layout))
    mcols = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, act_layout))
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, mma)
    # Step 0 peeled: an async MMA returns an accumulator token, which the loop must carry.
    a = _toy_decode(gl.load(codes_ptr + rows[:, None] * (K // 2) + cols[None, :]).to(gl.int32),
                    BLOCK_N, BLOCK_K, a_layout)
    b_smem.index(0).store(gl.load(act_ptr + krows[:, None] * BLOCK_M + mcols[None, :]))
    fence_async_shared()
    acc = warpgroup_mma(a, b_smem.index(0), acc, is_async=True)
    i = 1
    for k0 in range(BLOCK_K, K, BLOCK_K):
        c = gl.load(codes_ptr + rows[:, None] * (K // 2) + k0 // 2 + cols[None, :]).to(gl.int32)
        a = _toy_decode(c, BLOCK_N, BLOCK_K, a_layout)          # overlaps the previous step's MMA
        buf = b_smem.index(i % 2)
        buf.store(gl.load(act_ptr + (k0 + krows)[:, None] * BLOCK_M + mcols[None, :]))
        fence_async_shared()
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))   # previous step done: its buffer is free
        acc = warpgroup_mma(a, buf, acc, is_async=True)
        i += 1
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    out_layout: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [4, 1], [1, 0])
    o = gl.convert_layout(acc, out_layout)
    orows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, out_layout))
    ocols = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, out_layout))
    gl.store(out_ptr + orows[:, None] * BLOCK_M + ocols[None, :], o)


def main() -> None:
    sig = {"codes_ptr": "*u8", "act_ptr": "*bf16", "out_ptr": "*fp32", "K": "i32", "BLOCK_N": "constexpr",
           "BLOCK_M": "constexpr", "BLOCK_K": "constexpr"}
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(4)}
    src = GluonASTSource(overlap_probe, sig, {"BLOCK_N": 64, "BLOCK_M": 16, "BLOCK_K": 128}, attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    with tempfile.TemporaryDirectory() as d:
        cubin, ptx = os.path.join(d, "k.cubin"), os.path.join(d, "k.ptx")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
        info = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", os.path.join(d, "x")],
                              capture_output=True, text=True)
    ops = [m.group(1) for m in (re.search(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
                                for line in sass.splitlines()) if m]
    prev = 0
    for i, op in enumerate(ops):
        if op.startswith(("HGMMA", "WARPGROUP.DEPBAR", "BRA")):
            print(f"{i:5d} {op:24s} (+{i - prev} instructions)")
            prev = i
    print("\n".join(line for line in (info.stdout + info.stderr).splitlines() if "C75" in line or "Used" in line))


if __name__ == "__main__":
    main()
