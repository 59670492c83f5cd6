"""Drop the CTA-wide barriers Triton 3.6 puts before a TMA-fed ring's mbarrier operations (GemmConfig.tma_b).

Triton's shared-memory barrier analysis (membar) treats every mbarrier operation as a shared-memory access of the
barrier's allocation, so in a loop it puts a CTA-wide `bar.sync 0` before each mbarrier wait, expect and TMA load
(Triton 3.7 brings an NVIDIA filter for these, `canSkipBarSync`). In the TMA ring of kernels/wgmma_gemm.py those
barriers are exactly the per-step lockstep of the two warpgroups the ring exists to remove; the ring's own protocol
(an mbarrier per slot for the data, named barriers 1 / 2 for slot reuse, see wgmma_gemm._wg_release) orders
everything they would. This module removes them from the PTX of kernels that carry the marker below — only those
that use the ring — and only after the kernel's first wgmma (the prologue's barriers, between mbarrier.init and the
first TMA, stay).

Installed as Triton's `add_stages_inspection_hook` (chained after any hook already installed) when
kernels/wgmma_gemm.py is imported. The marker is part of the kernel source, so a cached binary was always compiled
with this pass; bump RING_MARKER's version when the rule changes.
"""
from __future__ import annotations

import re

RING_MARKER = "tmoe-tma-ring-v1"
_WAITS = ("mbarrier.try_wait", "mbarrier.arrive.expect_tx", "cp.async.bulk.tensor")
# between the barrier and the mbarrier operation only register arithmetic and the compiler's annotations may sit
_INERT = re.compile(r"^\s*(\.loc\b|//|\$L__tmp\d+:|\{|\}|\.reg\b|(mov|add|sub|and|or|xor|shl|shr|bfe|setp|selp|"
                    r"elect\.sync|cvt|mul|mad|not)[.\s]|waitLoop:|$)")


def drop_ring_barriers(ptx: str) -> tuple[str, int]:
    """`ptx` without the `bar.sync 0;` lines that precede (with only inert lines in between) an mbarrier wait /
    expect or a TMA load, after the first wgmma; and how many it dropped. Kernels without RING_MARKER: unchanged."""
    if RING_MARKER not in ptx:
        return ptx, 0
    lines = ptx.split("\n")
    first_mma = next((i for i, ln in enumerate(lines) if "wgmma.mma_async" in ln), len(lines))
    drop = set()
    for i in range(first_mma, len(lines)):
        if lines[i].strip() != "bar.sync \t0;" and lines[i].strip() != "bar.sync 0;":
            continue
        for j in range(i + 1, min(i + 40, len(lines))):
            text = lines[j]
            if any(op in text for op in _WAITS):
                drop.add(i)
                break
            if not _INERT.match(text):
                break
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop), len(drop)


def _hook(previous):
    def add_stages(backend, stages, options, language, capability):
        if previous is not None:
            previous(backend, stages, options, language, capability)
        make_ptx = stages.get("ptx")
        if make_ptx is None:
            return

        def ptx_stage(src, metadata):
            return drop_ring_barriers(make_ptx(src, metadata))[0]
        stages["ptx"] = ptx_stage
    add_stages._tmoe_ring_hook = True
    return add_stages


def install() -> None:
    """Install the PTX pass (once per process)."""
    from triton import knobs
    current = knobs.runtime.add_stages_inspection_hook
    if getattr(current, "_tmoe_ring_hook", False):
        return
    knobs.runtime.add_stages_inspection_hook = _hook(current)
