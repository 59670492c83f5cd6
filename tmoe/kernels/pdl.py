"""Programmatic dependent launch (PDL) of the layer's kernels on Hopper: the `TMOE_PDL` setting.

A kernel launched with `launch_pdl` may start while the previous kernel on the stream still runs, once every
program of that one has executed `griddepcontrol.launch_dependents` (or exited): its launch latency and program
start hide behind the previous kernel's tail. At one token the layer is six short kernels back to back, so this
is where a call spends its fixed cost (benchmarks/NOTES.md "v16", "v17").

The contract every tmoe kernel launched this way keeps (`enter` below; the Gluon GEMMs in wgmma_gemm):
  1. each program executes `griddepcontrol.wait` (the previous kernel complete, its writes visible) before it
     touches memory that the previous kernel may write or read;
  2. it signals its own dependents only after that wait.
By (2), when kernel n + 1 starts, kernel n has passed its wait, so kernel n - 1 has completed: a program may read
before its wait what kernels n - 2 and older wrote. One exception (early GEMM2, `early_gemm2_setting`): a GEMM2 program
waits for its expert's rows of GEMM1 (per-expert counters) instead of GEMM1's completion, releases the combine after
that, and waits for GEMM1's completion before it exits — the combine reads nothing GEMM1 writes, and GEMM2's
completion still implies GEMM1's. The GEMMs use this: GEMM2 finds its tile in the routing plan
and issues its first weight loads before waiting for GEMM1, GEMM1 does the same while the MXFP8 -> bf16 kernel,
which sits between routing and GEMM1, finishes. Every program of a kernel waits at least once, so the last
kernel's completion implies all earlier ones'; a kernel launched without the attribute waits for everything as
usual.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

__all__ = ["MODES", "GEMM1_PLAIN", "GEMM1_WAIT_FIRST", "GEMM1_EARLY", "CHAIN_MAX_TOKENS", "pdl_mode", "supported",
           "chain_on", "gemm2_on", "early_gemm2_setting", "launch_options", "enter"]

# "1": every kernel of the call after the first (quantize, routing, MXFP8 -> bf16, GEMM1, GEMM2, combine);
# "gemm2": only GEMM2 after GEMM1 (session 11's launches, kept for A/B runs); "0": none.
MODES = ("1", "gemm2", "0")
# GEMM1's place in the chain (wgmma_gemm.GDC_*): a plain launch (it lets GEMM2 start at once); a dependent launch
# right after routing (it waits before anything else: the EP transports, whose rows arrive already in bf16); a
# dependent launch two kernels after routing (MXFP8 -> bf16 in between): it finds its tile and issues its first
# weight-code loads before it waits, as GEMM2 does.
GEMM1_PLAIN, GEMM1_WAIT_FIRST, GEMM1_EARLY = 0, 1, 2
# NOTES: the chain pays where a call's fixed cost shows (H100 layer, against GEMM2-only: T = 1 -3..-5%, T = 8 -0.4..-2%,
# T = 128 -1.5..+0.6%); at T = 512 routing + MXFP8 -> bf16 finished 7 µs later than launched plainly (dsv3 timeline)
# and the layer measured +0.6% / +3.6% (H100 / H200, dsv3), so larger calls launch plainly (benchmarks/NOTES.md "v17")
CHAIN_MAX_TOKENS = 128


def pdl_mode() -> str:
    """`TMOE_PDL` (default "1"); ValueError for anything else than MODES (checked before any launch)."""
    if "TMOE_GEMM2_PDL" in os.environ:
        raise ValueError("TMOE_GEMM2_PDL was renamed: set TMOE_PDL=1|gemm2|0 instead (gemm2 = the old "
                         "TMOE_GEMM2_PDL=1, 0 = TMOE_GEMM2_PDL=0)")
    value = os.environ.get("TMOE_PDL", "1")
    if value not in MODES:
        raise ValueError(f"TMOE_PDL must be one of {MODES}, got {value!r}")
    return value


def supported(device: torch.device) -> bool:
    """`griddepcontrol` exists from sm_90 on; elsewhere (and under the interpreter) every launch is plain."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def chain_on(device: torch.device, num_tokens: int, mode: str | None = None) -> bool:
    """Launch the layer's kernels (all but GEMM2, which has its own switch) as programmatic dependent launches, for a
    call of `num_tokens` rows (at most CHAIN_MAX_TOKENS)?"""
    return (mode or pdl_mode()) == "1" and num_tokens <= CHAIN_MAX_TOKENS and supported(device)


def gemm2_on(mode: str | None = None) -> bool:
    """Launch the Gluon GEMM2 as a programmatic dependent launch of GEMM1 (modes "1" and "gemm2")?"""
    return (mode or pdl_mode()) in ("1", "gemm2")


def early_gemm2_setting() -> bool | None:
    """`TMOE_EARLY_GEMM2` (default "auto"): "1" = a Gluon GEMM2 launched as a programmatic dependent launch of a Gluon
    GEMM1 waits for its expert's rows of GEMM1 (per-expert counters, wgmma_gemm._previous_done), not all of GEMM1;
    "0" = it waits for all of GEMM1; "auto" (None) = as the GEMM2 pick says (`GemmConfig.early`: the H100 / H200 picks
    of dsv3 / gpt-oss / v4flash at 2-128 tokens where it measured -0.2..-8.6% with both grids N-block-major; at one
    token and on qwen3 it cost +1..+5%, benchmarks/NOTES.md "v26", "v28"). ValueError for anything else (checked
    before any launch)."""
    value = os.environ.get("TMOE_EARLY_GEMM2", "auto")
    if value not in ("auto", "1", "0"):
        raise ValueError(f"TMOE_EARLY_GEMM2 must be 'auto', '1' or '0', got {value!r}")
    return None if value == "auto" else value == "1"


def launch_options(on: bool) -> dict:
    """The Triton launch option of a programmatic dependent launch (none when off)."""
    return {"launch_pdl": True} if on else {}


@triton.jit
def enter(PDL: tl.constexpr, TRIGGER: tl.constexpr = True):
    """A programmatic dependent launch's first statement: wait for the previous kernel, then let the next one start
    (TRIGGER; the layer's last kernel leaves that to its exit). Nothing when not PDL."""
    if PDL:
        gdc_wait()
        if TRIGGER:
            gdc_launch_dependents()
