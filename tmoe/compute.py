"""The per-rank expert computation shared by every transport: rows x [N, H] with K slots each ->
one bf16 result row per slot (DESIGN.md §1.1 up to, not including, the combine).

    routing metadata -> exact bf16 dequant of x -> GEMM1 + activation + MXFP8 requant -> GEMM2

Writes `scratch.slot_out[n * K + k]` (bf16 bit patterns) for every slot whose expert is local
(`expert_start <= idx < expert_start + num_local_experts`); other rows are left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .autotune import cache as autotune_cache
from .dispatch.tma_copy import PeerRows
from .kernels import configs, grouped_gemm, pdl, weight_layout
from .kernels.quant import mxfp8_to_bf16
from .kernels.routing import build_routing

__all__ = ["ExpertOptions", "compute_slots", "gemm_configs"]


@dataclass(frozen=True)
class ExpertOptions:
    """What the expert MLP computes (everything but the data)."""
    activation: str = "swiglu"
    activation_clamp: Optional[float] = None
    activation_alpha: float = 1.702
    fast_math: bool = True
    l1_bias: Optional[torch.Tensor] = None
    l2_bias: Optional[torch.Tensor] = None
    gemm1_config: Optional[configs.GemmConfig] = None
    gemm2_config: Optional[configs.GemmConfig] = None


def gemm_configs(opts: ExpertOptions, num_slots: int, num_local_experts: int, device: torch.device, soft: bool, *,
                 num_experts: int, hidden: int, intermediate: int, topk: int):
    """(GEMM1, GEMM2) tile configs for a call: the caller's (opts), else the autotune cache's, else the
    built-in heuristic (Gluon kernels for decode tiles on Hopper); checked (ValueError) before any launch."""
    key = dict(num_experts=num_experts, hidden=hidden, intermediate=intermediate, topk=topk,
               device_name=None if soft else autotune_cache.device_name(device),
               hopper=not soft and configs.is_hopper(device))
    cfg1 = opts.gemm1_config or configs.select_config("gemm1", num_slots, num_local_experts, soft, **key)
    cfg2 = opts.gemm2_config or configs.select_config("gemm2", num_slots, num_local_experts, soft, **key)
    if not soft:
        configs.check_gpu_config(cfg1, "gemm1", key["hopper"])
        configs.check_gpu_config(cfg2, "gemm2", key["hopper"])
    return cfg1, cfg2


def compute_slots(scratch, x_fp8: Optional[torch.Tensor], x_sf: Optional[torch.Tensor], topk_idx: torch.Tensor,
                  topk_weights: torch.Tensor, l1, l2, *, num_local_experts: int, expert_start: int,
                  opts: ExpertOptions, stats: Optional[torch.Tensor] = None, soft: bool = False,
                  layer_shape: tuple[int, int] | None = None, config_slots: int | None = None,
                  out_row_addr=None) -> bool:
    """Run the local experts on rows x_fp8 [N, H] / x_sf [N, W] routed by topk_idx [N, K] (int64,
    contiguous) with topk_weights [N, K] (fp32, contiguous). `scratch` provides `x_dq` (int16
    [>= N, H]), `act` (int16 [>= N*K, I]), `slot_out` (int16 [>= N*K, H]) and `workspace` (dict).
    x_fp8 = x_sf = None: `scratch.x_dq` already holds the rows' exact bf16 values (symm_mem unpack).
    `layer_shape` = (global E, layer top-k) keys the autotune cache (default: (local E, K));
    `config_slots` = the slot count that picks the tile configs (default N*K; the symm_mem transport
    computes on capacity-sized rows, most of them empty, and passes its expected count).
    `out_row_addr` (int64 [N*K]): GEMM2 writes slot s's row at that address instead of slot_out; a
    `tma_copy.PeerRows`: the same rows by TMA stores, where GEMM2 is the Gluon kernel (otherwise into slot_out).
    Returns whether the rows went to out_row_addr (False: slot_out)."""
    n, k = topk_idx.shape
    if n == 0:
        return out_row_addr is not None
    mode = pdl.pdl_mode()           # TMOE_PDL: a bad value is a ValueError before any launch
    early_setting = pdl.early_gemm2_setting()    # TMOE_EARLY_GEMM2: likewise
    chain = pdl.chain_on(topk_idx.device, (config_slots or n * k) // k, mode)
    num_experts, topk = layer_shape or (num_local_experts, k)
    inter = l2[0].shape[2] * 2
    expected = config_slots if config_slots is not None and config_slots < n * k else None
    cfg1, cfg2 = gemm_configs(opts, config_slots or n * k, num_local_experts, topk_idx.device, soft,
                              num_experts=num_experts, hidden=scratch.x_dq.shape[1],
                              intermediate=inter, topk=topk)
    plan = build_routing(topk_idx, num_local_experts, expert_start, capacity_slots=n * k, stats=stats,
                         workspace=scratch.workspace, pdl_launch=chain)
    if x_fp8 is not None:
        mxfp8_to_bf16(x_fp8, x_sf, scratch.x_dq, pdl_launch=chain)
    # NOTES: with the MXFP8 -> bf16 kernel between routing and GEMM1, GEMM1 may read the plan before it waits
    # (kernels/pdl.py): it finds its tile and issues its first weight loads while that kernel runs
    gdc1 = (pdl.GEMM1_PLAIN if not chain else pdl.GEMM1_EARLY if x_fp8 is not None
            else pdl.GEMM1_WAIT_FIRST)
    gemm2_pdl = pdl.gemm2_on(mode)
    # NOTES: early GEMM2 (kernels/pdl.py, wgmma_gemm._previous_done): its programs start on an expert whose rows GEMM1
    # has finished instead of waiting for GEMM1's last programs to drain; both GEMMs must be the Gluon kernels. The
    # GEMM2 pick says whether (GemmConfig.early) unless TMOE_EARLY_GEMM2 forces it
    early = (gemm2_pdl and cfg1.kernel == cfg2.kernel == "gluon" and not soft and pdl.supported(topk_idx.device)
             and (cfg2.early if early_setting is None else early_setting))
    if cfg1.tma_b and early:    # NOTES: GEMM1's TMA ring reads the tokens copied into slot_out (rows_scratch), which
        cfg1 = replace(cfg1, tma_b=False)   # an early GEMM2 writes while GEMM1 still reads: cp.async loads, same bits
    grouped_gemm.gemm1_swiglu(scratch.x_dq, l1[0], l1[1], plan, topk_weights, scratch.act, topk=k,
                              quad=weight_layout.is_quad(l1), tiled=weight_layout.is_tiled(l1),
                              clamp=opts.activation_clamp, fast_math=opts.fast_math, cfg=cfg1, soft=soft,
                              activation=opts.activation, alpha=opts.activation_alpha, bias=opts.l1_bias,
                              expected_slots=expected, pdl_launch=gdc1, signal_rows=early,
                              rows_scratch=scratch.slot_out)
    if isinstance(out_row_addr, PeerRows) and cfg2.kernel != "gluon" and not soft:
        # NOTES: the TMA epilogue is the Gluon kernel's; SM stores to other ranks from another kernel's
        # epilogue stall it at many rows (docs/expert_parallel.md), so the caller returns slot_out instead
        out_row_addr = None
    grouped_gemm.gemm2(scratch.act, l2[0], l2[1], plan, scratch.slot_out, cfg=cfg2, soft=soft,
                       quad=weight_layout.is_quad(l2), tiled=weight_layout.is_tiled(l2),
                       topk_weights=topk_weights, bias=opts.l2_bias, expected_slots=expected, out_row_addr=out_row_addr,
                       pdl=gemm2_pdl, early_rows=-(-inter // cfg1.block_n) if early else 0)
    return out_row_addr is not None
