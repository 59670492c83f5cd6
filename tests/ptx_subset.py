"""A tiny interpreter for the PTX the Gluon kernels' inline asm uses, so CPU tests can check what those
asm blocks compute (the GPU tests check the compiled kernels end to end).

Values are numpy uint32 arrays indexed by lane (shape [32, ...]); `shfl.sync.bfly` exchanges along
axis 0. Only the instructions in kernels/wgmma_gemm.py are implemented; anything else raises.
"""
from __future__ import annotations

import re

import numpy as np
import torch

U32 = np.uint32


def _prmt(a, b, sel):
    """Default-mode prmt: byte i of the result = byte (sel nibble i & 7) of {b:a}, or its sign
    replicated when nibble bit 3 is set."""
    src = (b.astype(np.uint64) << np.uint64(32)) | a.astype(np.uint64)
    out = np.zeros_like(a, dtype=U32)
    for i in range(4):
        nib = (sel >> U32(4 * i)) & U32(0xF)
        byte = ((src >> ((nib & U32(7)).astype(np.uint64) * np.uint64(8))) & np.uint64(0xFF)).astype(U32)
        byte = np.where((nib & U32(8)) != 0, np.where(byte & U32(0x80), U32(0xFF), U32(0)), byte)
        out |= byte << U32(8 * i)
    return out


def _lop3(a, b, c, lut):
    out = np.zeros_like(a, dtype=U32)
    for bit in range(8):
        if lut >> bit & 1:
            ta = a if bit & 4 else ~a
            tb = b if bit & 2 else ~b
            tc = c if bit & 1 else ~c
            out |= ta & tb & tc
    return out


def _bf16x2_mul(a, b):
    """mul.rn.bf16x2: per 16-bit half, the exactly rounded bf16 product (via float64: a product of
    two bf16 values is exact there; the single rounding to bf16 happens in torch)."""
    def half(x, shift):
        bits = ((x >> U32(shift)) & U32(0xFFFF)).astype(np.int64)
        return torch.from_numpy((bits << 16).astype(np.int32)).view(torch.float32).double()
    out = np.zeros_like(a, dtype=U32)
    for shift in (0, 16):
        prod = (half(a, shift) * half(b, shift)).to(torch.bfloat16).view(torch.int16).numpy()
        out |= (prod.astype(np.uint16).astype(U32)) << U32(shift)
    return out


def run(asm: str, operands: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Execute `asm` with `$i` bound to operands[i] (inputs); returns every `$i` (outputs included)."""
    env: dict[str, np.ndarray] = {f"${i}": np.asarray(v, dtype=U32) for i, v in operands.items()}
    shape = next(iter(env.values())).shape

    def val(tok: str):
        tok = tok.strip()
        if tok in env:
            return env[tok]
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", tok):
            return np.full(shape, int(tok, 0) & 0xFFFFFFFF, dtype=U32)
        raise KeyError(f"undefined operand {tok!r}")

    preds: dict[str, np.ndarray] = {}
    for line in asm.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        halves = re.fullmatch(r"\{\s*(\S+)\s*,\s*(\S+)\s*\}\s*,\s*(\S+)", args)      # mov.b32 {lo, hi}, x
        packs = re.fullmatch(r"(\S+)\s*,\s*\{\s*(\S+)\s*,\s*(\S+)\s*\}", args)       # mov.b32 x, {lo, hi}
        if op == "mov.b32" and halves:      # b16 registers hold their half in the low 16 bits
            x = val(halves.group(3))
            env[halves.group(1)], env[halves.group(2)] = x & U32(0xFFFF), x >> U32(16)
            continue
        if op == "mov.b32" and packs:
            env[packs.group(1)] = (val(packs.group(2)) & U32(0xFFFF)) | (val(packs.group(3)) << U32(16))
            continue
        args = [a.strip() for a in args.split(",")]
        dst = args[0]
        if op == "mov.b32":
            env[dst] = val(args[1])
        elif op == "shf.l.wrap.b32":        # funnel shift of {args[2]:args[1]} left, the high word (a rotate if equal)
            lo, hi, n = val(args[1]).astype(np.uint64), val(args[2]).astype(np.uint64), val(args[3]) & U32(31)
            env[dst] = (((hi << np.uint64(32) | lo) << n.astype(np.uint64)) >> np.uint64(32)).astype(U32)
        elif op == "and.b32":
            env[dst] = val(args[1]) & val(args[2])
        elif op in ("shr.u32", "shr.b32"):
            env[dst] = val(args[1]) >> val(args[2])
        elif op == "shl.b32":
            env[dst] = val(args[1]) << val(args[2])
        elif op == "mad.lo.u32":
            env[dst] = val(args[1]) * val(args[2]) + val(args[3])        # uint32 arithmetic wraps like the GPU
        elif op == "max.u32":
            env[dst] = np.maximum(val(args[1]), val(args[2]))
        elif op == "max.u16x2":
            a, b = val(args[1]), val(args[2])
            lo = np.maximum(a & U32(0xFFFF), b & U32(0xFFFF))
            env[dst] = lo | (np.maximum(a >> U32(16), b >> U32(16)) << U32(16))
        elif op == "prmt.b32":
            env[dst] = _prmt(val(args[1]), val(args[2]), val(args[3]))
        elif op == "lop3.b32":
            env[dst] = _lop3(val(args[1]), val(args[2]), val(args[3]), int(args[4], 0))
        elif op == "mul.rn.bf16x2":
            env[dst] = _bf16x2_mul(val(args[1]), val(args[2]))
        elif op == "setp.ne.u32":
            preds[dst] = val(args[1]) != val(args[2])
        elif op == "selp.b32":
            env[dst] = np.where(preds[args[3]], val(args[1]), val(args[2]))
        elif op == "shfl.sync.bfly.b32":
            lanes = np.arange(32) ^ int(args[2], 0)
            env[dst] = val(args[1])[lanes]
        else:
            raise NotImplementedError(f"ptx_subset: {op}")
    return {int(k[1:]): v for k, v in env.items() if k.startswith("$")}
