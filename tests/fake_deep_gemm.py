"""A stand-in for DeepGEMM's mega-MoE Python API (`deep_gemm`), for tests without an SM100 GPU.

It accepts exactly what the real `fp8_fp4_mega_moe` accepts (DeepGEMM-layout weights: int8 codes
with L1 rows interleaved by 8, packed-UE8M0 int32 scales in MN-major TMA-aligned storage with the
UTCCP 4x32 row transpose), checks it the way DeepGEMM's host code does, undoes the layout with its
own code (written from the layout description, independently of tmoe.backend), and computes the
layer with `tmoe.reference.reference_moe`. So a route through it exercises the real layout
conversion: a wrong interleave or transpose changes the result.

Deliberate differences from the real module: single rank only (group None or of size 1), buffers
on `DEVICE` (CPU by default), exact math (fast_math is ignored).
"""
from __future__ import annotations

import sys

import torch

from tmoe import reference

__version__ = "0.0+fake"
TMOE_FAKE = True
DEVICE = torch.device("cpu")
TOKEN_ALIGNMENT = 384          # DeepGEMM aligns num_max_tokens_per_rank to this
calls: list[dict] = []         # one entry per fp8_fp4_mega_moe call (tests inspect it)


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _assert(cond: bool, msg: str) -> None:
    # DeepGEMM's DG_HOST_ASSERT surfaces as a RuntimeError in Python.
    if not cond:
        raise RuntimeError(f"fake deep_gemm: {msg}")


def _ranks(group) -> tuple[int, int]:
    if group is None:
        return 0, 1
    return group.rank(), group.size()


# ----------------------------------------------------------------------------- buffer
class SymmBuffer:
    """One int8 allocation carved into the user-visible views x, x_sf, topk_idx, topk_weights."""

    def __init__(self, group, num_experts: int, num_max_tokens_per_rank: int, num_topk: int,
                 hidden: int, intermediate_hidden: int, mma_type: str = "fp8xfp4",
                 activation: str = "swiglu"):
        rank, num_ranks = _ranks(group)
        _assert(num_ranks == 1, f"the stand-in runs one rank only, got a group of {num_ranks}")
        _assert(mma_type == "fp8xfp4" and activation == "swiglu", f"unsupported {mma_type}/{activation}")
        _assert(hidden % 128 == 0 and intermediate_hidden % 128 == 0,
                f"hidden={hidden} and intermediate_hidden={intermediate_hidden} must be multiples of 128")
        _assert(num_experts % num_ranks == 0, "num_experts % num_ranks")
        _assert(1 <= num_topk <= 32, f"num_topk={num_topk}")
        self.group, self.rank, self.num_ranks = group, rank, num_ranks
        self.num_experts, self.num_topk = num_experts, num_topk
        self.hidden, self.intermediate_hidden = hidden, intermediate_hidden
        t = _align(max(num_max_tokens_per_rank, 1), TOKEN_ALIGNMENT)
        self.num_max_tokens_per_rank = t
        # Byte offsets: int64 first so every view starts aligned (t is a multiple of 384).
        sizes = [t * num_topk * 8, t * num_topk * 4, t * (hidden // 128) * 4, t * hidden]
        self.buffer = torch.zeros(sum(sizes), dtype=torch.int8, device=DEVICE)
        o = [0]
        for s in sizes:
            o.append(o[-1] + s)
        b = self.buffer
        self.topk_idx = b[o[0]:o[1]].view(torch.int64).view(t, num_topk)
        self.topk_weights = b[o[1]:o[2]].view(torch.float32).view(t, num_topk)
        self.x_sf = b[o[2]:o[3]].view(torch.int32).view(t, hidden // 128)
        self.x = b[o[3]:o[4]].view(torch.float8_e4m3fn).view(t, hidden)

    def destroy(self):
        self.buffer = self.x = self.x_sf = self.topk_idx = self.topk_weights = None


def get_symm_buffer_for_mega_moe(group, num_experts: int, num_max_tokens_per_rank: int, num_topk: int,
                                 hidden: int, intermediate_hidden: int, use_fp8_dispatch=None,
                                 mma_type: str = "fp8xfp4", activation: str = "swiglu") -> SymmBuffer:
    return SymmBuffer(group, num_experts, num_max_tokens_per_rank, num_topk, hidden, intermediate_hidden,
                      mma_type, activation)


# ----------------------------------------------------------------------------- layout (own code)
def interleave_src_rows(n: int) -> list[int]:
    """src[r] = the [gate | up] row that lands on row r after the interleave by 8."""
    half = n // 2
    src = []
    for c in range(half // 8):
        src += [8 * c + j for j in range(8)]            # gate rows 8c .. 8c+7
        src += [half + 8 * c + j for j in range(8)]     # up rows   8c .. 8c+7
    return src


def utccp_src_rows(n: int) -> list[int]:
    """src[r] = the row that lands on row r after the UTCCP transpose (new 4b+a = old 32a+b)."""
    src = [0] * n
    for q in range(n // 128):
        for a in range(4):
            for b in range(32):
                src[128 * q + 4 * b + a] = 128 * q + 32 * a + b
    return src


def _gather_rows(t: torch.Tensor, src: list[int]) -> torch.Tensor:
    """Row r of the result = row src[r] of t (dim 1), keeping t's strides like DeepGEMM does."""
    moved = t[:, torch.tensor(src, device=t.device)]
    return torch.empty_like(t).copy_(moved)


def _scatter_rows(t: torch.Tensor, src: list[int]) -> torch.Tensor:
    """Undo `_gather_rows`: row src[r] of the result = row r of t (contiguous result)."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out[:, torch.tensor(src, device=t.device)] = t
    return out


def _words_to_bytes(words: torch.Tensor) -> torch.Tensor:
    """int32 [..., W] -> uint8 [..., 4W], byte j of word i at 4i+j (little-endian reinterpretation)."""
    assert sys.byteorder == "little"
    return words.contiguous().view(torch.uint8)


def _check_weights(name, w, sf, e, n, k):
    _assert(w.dtype == torch.int8, f"{name} must be int8 packed FP4, got {w.dtype}")
    _assert(tuple(w.shape) == (e, n, k // 2), f"{name} shape {tuple(w.shape)} != {(e, n, k // 2)}")
    _assert(w.is_contiguous(), f"{name} must be contiguous (K-major)")
    n_al = _align(n, 4)
    _assert(sf.dtype == torch.int32, f"{name} scales must be packed UE8M0 int32, got {sf.dtype}")
    _assert(tuple(sf.shape) == (e, n, k // 128), f"{name} scales shape {tuple(sf.shape)} != {(e, n, k // 128)}")
    _assert(sf.stride() == (n_al * (k // 128), 1, n_al),
            f"{name} scales must be MN-major TMA-aligned, strides {sf.stride()} != {(n_al * (k // 128), 1, n_al)}")


def weights_from_deepgemm_layout(l1, l2) -> reference.MoEWeights:
    """DeepGEMM-layout (w1, w1_sf), (w2, w2_sf) -> canonical MXFP4, by this module's own inversion."""
    (w1, s1), (w2, s2) = l1, l2
    n1, n2 = w1.shape[1], w2.shape[1]
    # L1: sf_dg = utccp(interleave(sf)); row r of sf_dg holds canonical row inter[utccp[r]].
    inter, ut1 = interleave_src_rows(n1), utccp_src_rows(n1)
    s1_src = [inter[ut1[r]] for r in range(n1)]
    w1_c = _scatter_rows(w1, inter)
    s1_c = _scatter_rows(_words_to_bytes(s1), s1_src)
    w2_c = w2.contiguous()
    s2_c = _scatter_rows(_words_to_bytes(s2), utccp_src_rows(n2))
    return reference.MoEWeights(w1_c, s1_c, w2_c, s2_c)


# ----------------------------------------------------------------------------- DeepGEMM API
def transform_sf_into_required_layout(sf: torch.Tensor, mn: int, k: int, recipe=(1, 32), num_groups=None,
                                      is_sfa: bool = False, disable_ue8m0_cast: bool = False) -> torch.Tensor:
    """fp32 power-of-two scales [G, mn, k/32] -> packed UE8M0 int32 [G, mn, k/128], MN-major TMA-aligned."""
    _assert(tuple(recipe) in ((1, 32), (1, 1, 32)), f"recipe {recipe}")
    _assert(sf.dtype == torch.float32 and not disable_ue8m0_cast, "stand-in packs fp32 scales only")
    sf3 = sf if sf.dim() == 3 else sf.unsqueeze(0)
    g = sf3.shape[0]
    _assert(num_groups in (None, g), f"num_groups={num_groups} but sf has {g}")
    _assert(tuple(sf3.shape[1:]) == (mn, k // 32) and k % 128 == 0, f"sf shape {tuple(sf.shape)} for mn={mn} k={k}")
    exp_bytes = ((sf3.contiguous().view(torch.int32) >> 23) & 0xFF).to(torch.uint8)
    words = exp_bytes.contiguous().view(torch.int32)                 # [G, mn, k/128], little-endian
    n_al = _align(mn, 4)
    out = torch.empty_strided((g, mn, k // 128), (n_al * (k // 128), 1, n_al), dtype=torch.int32,
                              device=sf.device)
    out.copy_(words)
    return out if sf.dim() == 3 else out[0]


def transform_weights_for_mega_moe(l1_weights, l2_weights, activation: str = "swiglu"):
    _assert(activation == "swiglu", f"activation {activation!r}")
    if isinstance(l1_weights, torch.Tensor):                             # bf16 variant: interleave L1 only
        return _gather_rows(l1_weights, interleave_src_rows(l1_weights.shape[1])), l2_weights
    (w1, s1), (w2, s2) = l1_weights, l2_weights
    inter = interleave_src_rows(w1.shape[1])
    w1_t = _gather_rows(w1, inter)
    s1_t = _gather_rows(_gather_rows(s1, inter), utccp_src_rows(s1.shape[1]))
    s2_t = _gather_rows(s2, utccp_src_rows(s2.shape[1]))
    return (w1_t, s1_t), (w2, s2_t)


def fp8_fp4_mega_moe(y: torch.Tensor, l1_weights, l2_weights, sym_buffer: SymmBuffer,
                     cumulative_local_expert_recv_stats=None, recipe=(1, 1, 32), activation: str = "swiglu",
                     activation_clamp: float | None = None, fast_math: bool = True) -> None:
    buf = sym_buffer
    _assert(tuple(recipe) == (1, 1, 32), f"recipe must be (1, 1, 32), got {recipe}")
    _assert(activation == "swiglu", f"activation must be 'swiglu', got {activation!r}")
    _assert(activation_clamp is None or activation_clamp >= 0, f"activation_clamp={activation_clamp}")
    h, i = buf.hidden, buf.intermediate_hidden
    e_local = buf.num_experts // buf.num_ranks
    _assert(y.dtype == torch.bfloat16 and y.dim() == 2 and y.shape[1] == h and y.is_contiguous(),
            f"y must be contiguous bf16 [T, {h}], got {y.dtype} {tuple(y.shape)}")
    n = y.shape[0]
    _assert(n <= buf.num_max_tokens_per_rank, f"num_tokens={n} > {buf.num_max_tokens_per_rank}")
    (w1, s1), (w2, s2) = l1_weights, l2_weights
    _check_weights("l1", w1, s1, e_local, 2 * i, h)
    _check_weights("l2", w2, s2, e_local, h, i)
    stats = cumulative_local_expert_recv_stats
    if stats is not None:
        _assert(stats.dtype == torch.int32 and tuple(stats.shape) == (e_local,) and stats.is_contiguous(),
                f"stats must be contiguous int32 [{e_local}]")
    weights = weights_from_deepgemm_layout(l1_weights, l2_weights)
    dev = y.device                                   # compute where y lives (the buffer may be elsewhere)
    weights = reference.MoEWeights(*(t.to(dev) for t in (weights.w1, weights.w1_sf, weights.w2, weights.w2_sf)))
    offset = buf.rank * e_local
    idx = buf.topk_idx[:n].to(dev)
    out = reference.reference_moe(buf.x[:n].to(dev), buf.x_sf[:n].to(dev), idx, buf.topk_weights[:n].to(dev),
                                  weights, activation_clamp=activation_clamp, expert_offset=offset)
    y.copy_(out)
    if stats is not None:
        local = idx - offset
        local = local[(idx >= 0) & (local >= 0) & (local < e_local)]
        stats += torch.bincount(local, minlength=e_local).to(torch.int32).to(stats.device)
    calls.append({"num_tokens": n, "hidden": h, "intermediate": i, "num_experts_local": e_local,
                  "activation_clamp": activation_clamp, "fast_math": fast_math})
