"""The fused W4A8 MoE layer: DeepGEMM's `fp8_fp4_mega_moe` API on top of tmoe's Triton kernels.

    buf = get_symm_buffer_for_mega_moe(None, E, T_max, K, H, I)
    l1, l2 = transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))
    buf.x[:T].copy_(x_fp8); buf.x_sf[:T].copy_(x_sf); buf.topk_idx[:T].copy_(idx); buf.topk_weights[:T].copy_(w)
    fp8_fp4_mega_moe(y, l1, l2, buf)            # y: bf16 [T, H], written in place

One call = routing metadata (3 small kernels) -> exact bf16 dequant of the tokens -> GEMM1 + SwiGLU
+ MXFP8 requant -> GEMM2 -> combine.
Every launch is sized from the buffer capacity and T (a shape), never from routed counts, so the
call can be captured in a CUDA graph and replayed with new buffer contents.
"""
from __future__ import annotations

import math
import os
import socket
import warnings
import zlib
from typing import Optional, Sequence

import torch

from . import formats
from .compute import ExpertOptions, compute_slots
from .dispatch.collective import CollectiveTransport
from .kernels import configs, pdl
from .kernels.combine import combine
from .kernels.numerics import soft_numerics
from .kernels.quant import per_token_cast_to_fp8
from .reference import ACTIVATIONS, OAI_ALPHA

__all__ = ["MegaMoEBuffer", "TransformedWeights", "get_symm_buffer_for_mega_moe",
           "transform_weights_for_mega_moe", "fp8_fp4_mega_moe"]

TRANSPORTS = ("local", "collective", "symm_mem")


class MegaMoEBuffer:
    """Per-rank inputs and scratch of the layer (DeepGEMM's SymmBuffer counterpart).

    Callers fill `x` (float8_e4m3fn [T_max, H]), `x_sf` (int32 [T_max, ceil(H/128)]), `topk_idx`
    (int64 [T_max, K]) and `topk_weights` (fp32 [T_max, K]) for the first T rows before each call.
    One buffer serves every layer of the same shape. `destroy()` frees the memory.
    """

    def __init__(self, group, num_experts: int, num_max_tokens_per_rank: int, num_topk: int,
                 hidden: int, intermediate_hidden: int, device: torch.device | str | None = None,
                 backend: str = "triton", transport: str = "auto", *, _simulated=None):
        # _simulated = (rank, SymmMemTransport): one of R simulated ranks in this process (CPU tests).
        num_ranks = 1 if group is None else group.size()
        rank = 0 if group is None else group.rank()
        if _simulated is not None:
            rank, num_ranks = _simulated[0], _simulated[1].num_ranks
        dev = _normalize_device(device)
        requested_transport = transport
        try:
            transport = _check_buffer_args(num_experts, num_max_tokens_per_rank, num_topk, hidden,
                                           intermediate_hidden, num_ranks,
                                           "collective" if _simulated else transport, dev, backend)
            transport = "symm_mem" if _simulated else transport
            error = None
        except ValueError as exc:
            error = str(exc)
        transport_impl = None
        if group is not None and num_ranks > 1:
            # Collective: a rank with bad arguments must not leave the others waiting.
            transport_impl = CollectiveTransport(group, num_experts if isinstance(num_experts, int) else 0)
            transport_impl.agree(error, "get_symm_buffer_for_mega_moe call")
            if transport == "symm_mem":
                # NVLink symmetric memory needs every rank on this host; `auto` falls back to collectives.
                hosts = {h for (h,) in transport_impl.gather_ints([_host_id()])}
                if len(hosts) > 1:
                    if requested_transport == "symm_mem":
                        raise ValueError(f"transport 'symm_mem' needs every rank on one host (one NVLink domain); "
                                         f"this group spans {len(hosts)} hosts: use transport='collective'")
                    transport = "collective"
            transport_impl.check_same("get_symm_buffer_for_mega_moe arguments (E, T_max, K, H, I, transport)",
                                      [num_experts, num_max_tokens_per_rank, num_topk, hidden, intermediate_hidden,
                                       TRANSPORTS.index(transport)])
        elif error is not None:
            raise ValueError(error)
        self.device = dev
        self.group = group
        self.rank, self.num_ranks = rank, num_ranks
        self.num_experts = num_experts
        self.num_local_experts = num_experts // num_ranks
        self.num_max_tokens_per_rank = num_max_tokens_per_rank
        self.num_topk = num_topk
        self.hidden = hidden
        self.intermediate_hidden = intermediate_hidden
        self.transport = transport
        self.transport_impl = transport_impl
        self.backend = backend
        self.workspace: dict = {}
        self.destroyed = False
        self.x_dq = self.act = self.slot_out = self.slot_home = None
        self.symm = None            # SymmMemTransport of the symm_mem transport
        cap, k = num_max_tokens_per_rank, num_topk
        if backend == "deepgemm":
            # DeepGEMM owns the buffer (symmetric memory); tmoe exposes its four input views.
            from . import backend as backends
            dg = backends._import_deep_gemm()
            dg_group = group if group is not None else (backends._single_process_group() if dev.type == "cuda" else None)
            self.deepgemm_buffer = dg.get_symm_buffer_for_mega_moe(dg_group, num_experts, cap, k, hidden,
                                                                   intermediate_hidden)
            b = self.deepgemm_buffer
            self.x, self.x_sf, self.topk_idx, self.topk_weights = b.x, b.x_sf, b.topk_idx, b.topk_weights
            return
        if backend != "triton":
            raise ValueError(f"backend must be 'triton' or 'deepgemm', got {backend!r}")
        self.deepgemm_buffer = None
        if transport == "symm_mem":
            from .dispatch import symm_mem
            self.symm = (_simulated[1] if _simulated is not None else
                         symm_mem.create_transport(group, num_experts, cap, k, hidden, dev))
            # The caller-filled views live in the symmetric allocation (DeepGEMM's SymmBuffer layout idea).
            self.x, self.x_sf, self.topk_idx, self.topk_weights = (
                self.symm.x, self.symm.x_sf, self.symm.topk_idx, self.symm.topk_weights)
        else:
            self.x = torch.empty((cap, hidden), dtype=torch.float8_e4m3fn, device=dev)
            self.x_sf = torch.empty((cap, formats.packed_scale_words(hidden)), dtype=torch.int32, device=dev)
            self.topk_idx = torch.empty((cap, k), dtype=torch.int64, device=dev)
            self.topk_weights = torch.empty((cap, k), dtype=torch.float32, device=dev)
        self._alloc_triton_scratch()

    def _alloc_triton_scratch(self) -> None:
        """Scratch (bf16 bit patterns, int16): the exactly dequantized tokens, the dequantized MXFP8
        intermediate (sorted slot rows) and the per-slot GEMM2 outputs."""
        cap, k, dev = self.num_max_tokens_per_rank, self.num_topk, self.device
        slots = max(cap * k, 1)
        if self.num_ranks == 1:
            rows, computed = max(cap, 1), slots
        elif self.symm is None:   # collective, worst case: every slot of every rank here, one row per slot
            rows = computed = max(cap * k * self.num_ranks, 1)
            self.slot_home = torch.empty((slots, self.hidden), dtype=torch.int16, device=dev)
        else:   # symm_mem: one row per (source token, this rank) with K slots each; results land in `home`
            rows, computed = max(cap * self.num_ranks, 1), max(cap * k * self.num_ranks, 1)
        self.x_dq = torch.empty((rows, self.hidden), dtype=torch.int16, device=dev)
        self.act = torch.empty((computed, self.intermediate_hidden), dtype=torch.int16, device=dev)
        self.slot_out = torch.empty((computed, self.hidden), dtype=torch.int16, device=dev)

    @property
    def expert_start(self) -> int:
        return self.rank * self.num_local_experts

    def destroy(self) -> None:
        """Release the memory; the buffer cannot be used afterwards."""
        if self.deepgemm_buffer is not None and hasattr(self.deepgemm_buffer, "destroy"):
            self.deepgemm_buffer.destroy()
        self.deepgemm_buffer = None
        self.symm = None
        for name in ("x", "x_sf", "topk_idx", "topk_weights", "x_dq", "act", "slot_out", "slot_home"):
            setattr(self, name, None)
        self.workspace.clear()
        self.destroyed = True

    def __repr__(self) -> str:
        return (f"MegaMoEBuffer(backend={self.backend}, transport={self.transport}, rank={self.rank}/{self.num_ranks}, "
                f"experts={self.num_experts}, max_tokens={self.num_max_tokens_per_rank}, topk={self.num_topk}, "
                f"hidden={self.hidden}, intermediate={self.intermediate_hidden}, device={self.device})")


def _check_buffer_args(num_experts, num_max_tokens_per_rank, num_topk, hidden, intermediate_hidden, num_ranks,
                       transport, device: torch.device, backend: str = "triton") -> str:
    """Validate the buffer's arguments; returns the transport that will serve `num_ranks`."""
    _check_int("num_experts", num_experts, 1)
    _check_int("num_max_tokens_per_rank", num_max_tokens_per_rank, 0)
    _check_int("num_topk", num_topk, 1)
    if num_topk > 32:
        raise ValueError(f"num_topk must be <= 32, got {num_topk}")
    formats.check_hidden("hidden", hidden)
    formats.check_hidden("intermediate_hidden", intermediate_hidden)
    if num_experts % num_ranks:
        raise ValueError(f"num_experts={num_experts} is not divisible by the group size {num_ranks}")
    if transport not in TRANSPORTS + ("auto",):
        raise ValueError(f"transport must be 'auto' or one of {TRANSPORTS}, got {transport!r}")
    if num_ranks == 1:
        return "local"
    if transport == "local":
        raise ValueError(f"transport 'local' serves one rank; this group has {num_ranks}")
    if transport == "collective" or backend != "triton":
        return "collective"
    from .dispatch.symm_mem import fused_return_setting, symm_mem_available
    fused_return_setting(os.environ.get("TMOE_EP_FUSED_RETURN", "auto"))   # an error agreed like the others
    ok, why = symm_mem_available(device, num_ranks)
    if transport == "symm_mem" and not ok:
        raise ValueError(f"transport 'symm_mem' is not available: {why}; use transport='collective'")
    return "symm_mem" if ok else "collective"


def _host_id() -> int:
    """A stable int64 per host (CRC32 of the host name)."""
    return zlib.crc32(socket.gethostname().encode())


def _normalize_device(device) -> torch.device:
    """None -> the current CUDA device (or cpu without one); 'cuda' -> 'cuda:<current>'."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def get_symm_buffer_for_mega_moe(group, num_experts: int, num_max_tokens_per_rank: int, num_topk: int,
                                 hidden: int, intermediate_hidden: int, *,
                                 device: torch.device | str | None = None,
                                 backend: str | None = None, transport: str = "auto") -> MegaMoEBuffer:
    """Allocate the layer's buffer (collective when `group` is a process group; None = one GPU).

    The backend is chosen here (`tmoe.backend.select_backend`: DeepGEMM on SM100 when it can serve
    the shape, else Triton; `backend=` or TMOE_BACKEND override) and recorded in the buffer.
    """
    from . import backend as backends
    dev = _normalize_device(device)
    choice = backends.select_backend(hidden=hidden, intermediate=intermediate_hidden, num_experts=num_experts,
                                     num_topk=num_topk, num_ranks=1 if group is None else group.size(),
                                     device=dev, backend=backend)
    return MegaMoEBuffer(group, num_experts, num_max_tokens_per_rank, num_topk, hidden,
                         intermediate_hidden, device=dev, backend=choice, transport=transport)


class TransformedWeights(tuple):
    """(codes, scales) in one backend's layout; unpacks like the plain tuple.

    `backend` names the layout ("triton" or "deepgemm"); `canonical` keeps the canonical
    (codes, scales) pair the layout was made from (the cross-check runs Triton from it);
    `code_order` is the Triton backend's byte order of the codes and `code_bits` (quad / tiled orders) the bit
    layout inside each code word (kernels/weight_layout.py: WORD_BITS, chosen by `word_bits_for`).
    """

    def __new__(cls, codes: torch.Tensor, scales: torch.Tensor, backend: str = "triton", canonical=None,
                code_order: str = "canonical", code_bits: str | None = None):
        obj = super().__new__(cls, (codes, scales))
        obj.backend = backend
        obj.canonical = canonical if canonical is not None else (codes, scales)
        obj.code_order = code_order
        obj.code_bits = code_bits
        return obj


def _check_canonical(name: str, pair, rows_per_expert_hint: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} must be a (codes, scales) pair, got {type(pair).__name__}")
    codes, scales = pair
    if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int8, torch.uint8) or codes.dim() != 3:
        raise ValueError(f"{name} codes must be int8 [E, {rows_per_expert_hint}, K/2], got "
                         f"{getattr(codes, 'dtype', type(codes))} {tuple(getattr(codes, 'shape', ()))}")
    if not isinstance(scales, torch.Tensor) or scales.dtype != torch.uint8 or scales.dim() != 3:
        raise ValueError(f"{name} scales must be uint8 UE8M0 [E, {rows_per_expert_hint}, K/32], got "
                         f"{getattr(scales, 'dtype', type(scales))} {tuple(getattr(scales, 'shape', ()))}")
    e, n, half_k = codes.shape
    if tuple(scales.shape) != (e, n, half_k * 2 // 32) or (half_k * 2) % 32:
        raise ValueError(f"{name} scales shape {tuple(scales.shape)} does not match codes {tuple(codes.shape)} "
                         f"(expected [{e}, {n}, {half_k * 2 // 32}] and K % 32 == 0)")
    if codes.device != scales.device:
        raise ValueError(f"{name} codes on {codes.device} but scales on {scales.device}")
    return codes, scales


def transform_weights_for_mega_moe(l1_weights, l2_weights, *, backend: str | None = None,
                                   layout: str | None = None):
    """Canonical MXFP4 (DESIGN.md §2.2) -> the selected backend's layout.

    l1_weights = (w1 int8 [E, 2I, H/2], w1_sf uint8 [E, 2I, H/32]) with rows [gate | up];
    l2_weights = (w2 int8 [E, H, I/2], w2_sf uint8 [E, H, I/32]). Returns (l1, l2) as
    `TransformedWeights`; the canonical tensors are not modified. The backend is chosen as in
    `get_symm_buffer_for_mega_moe` (pass the same `backend=` to both). `layout` (Triton backend;
    default TMOE_WEIGHT_LAYOUT or "auto"): "quad" stores the codes in the lane-quad byte order of
    kernels/weight_layout.py (tensors with K >= 128; same results, faster Gluon kernels), "tiled" also
    stores each 32-row block K step by K step (contiguous decode reads), "canonical" keeps DESIGN.md's
    order, "auto" picks tiled for weights on an sm_90 GPU. Scale rows are padded to 4 bytes.
    """
    from .kernels import weight_layout
    layout = layout if layout is not None else weight_layout.default_layout()
    if layout not in weight_layout.LAYOUTS:
        raise ValueError(f"layout must be one of {weight_layout.LAYOUTS}, got {layout!r}")
    w1, w1_sf = _check_canonical("l1_weights", l1_weights, "2I")
    w2, w2_sf = _check_canonical("l2_weights", l2_weights, "H")
    e, two_i, half_h = w1.shape
    if w2.shape[0] != e or w2.shape[1] != half_h * 2 or w2.shape[2] * 2 != two_i // 2 or two_i % 2:
        raise ValueError(f"w2 shape {tuple(w2.shape)} does not match w1 shape {tuple(w1.shape)}: "
                         f"expected [{e}, {half_h * 2}, {two_i // 4}]")
    formats.check_hidden("hidden (w1.shape[2] * 2)", half_h * 2)
    formats.check_hidden("intermediate (w1.shape[1] / 2)", two_i // 2)
    from . import backend as backends
    choice = backends.select_backend(hidden=half_h * 2, intermediate=two_i // 2, device=w1.device, backend=backend)
    if choice == "deepgemm":
        # NOTES: to_deepgemm_weights already applies DeepGEMM's own transform (interleave + UTCCP).
        dl1, dl2 = backends.to_deepgemm_weights((w1, w1_sf), (w2, w2_sf))
        return (TransformedWeights(*dl1, backend="deepgemm", canonical=(w1, w1_sf)),
                TransformedWeights(*dl2, backend="deepgemm", canonical=(w2, w2_sf)))
    layout = weight_layout.resolve_layout(layout, w1.device)
    if configs.is_hopper(w1.device):
        from .kernels.wgmma_gemm import fp4_lut
        fp4_lut(w1.device)      # the Gluon kernels' table, made here: outside any CUDA-graph capture

    def triton_layout(codes, scales):
        codes = codes.view(torch.uint8)
        if layout == "tiled" and weight_layout.can_tile(codes):
            bits = weight_layout.word_bits_for(scales)
            return TransformedWeights(weight_layout.to_tiled(codes, bits), weight_layout.pad_scale_rows(scales),
                                      canonical=(codes, scales), code_order="tiled", code_bits=bits)
        if layout in ("quad", "tiled") and weight_layout.can_quad(codes):
            bits = weight_layout.word_bits_for(scales)
            return TransformedWeights(weight_layout.to_quad(codes, bits), weight_layout.pad_scale_rows(scales),
                                      canonical=(codes, scales), code_order="quad", code_bits=bits)
        return TransformedWeights(codes.contiguous(), weight_layout.pad_scale_rows(scales))
    return triton_layout(w1, w1_sf), triton_layout(w2, w2_sf)


def _values_checked() -> bool:
    if os.environ.get("TMOE_SKIP_VALUE_CHECKS", "0") == "1":
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def _validate_call(y, l1, l2, buf: MegaMoEBuffer, stats, recipe, activation, activation_clamp,
                   biases=(None, None)) -> int:
    if not isinstance(buf, MegaMoEBuffer):
        raise ValueError(f"sym_buffer must come from tmoe.get_symm_buffer_for_mega_moe, got {type(buf).__name__}")
    pdl.pdl_mode()             # TMOE_PDL: a bad value is an error here, before any launch (a local choice)
    if buf.destroyed:
        raise ValueError("sym_buffer was destroyed")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.bfloat16 or y.dim() != 2:
        raise ValueError(f"y must be a bf16 [T, hidden] tensor, got {getattr(y, 'dtype', type(y))} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    t, h = y.shape
    if h != buf.hidden:
        raise ValueError(f"y.shape[1]={h} does not match the buffer's hidden={buf.hidden}")
    if t > buf.num_max_tokens_per_rank:
        raise ValueError(f"num_tokens={t} (y.shape[0]) exceeds the buffer capacity "
                         f"num_max_tokens_per_rank={buf.num_max_tokens_per_rank}")
    if not y.is_contiguous():
        raise ValueError(f"y must be contiguous, got strides {y.stride()}")
    if y.device != buf.device:
        raise ValueError(f"y is on {y.device} but the buffer is on {buf.device}")
    for name, lw in (("l1_weights", l1), ("l2_weights", l2)):
        if not isinstance(lw, TransformedWeights):
            raise ValueError(f"{name} was not produced by tmoe.transform_weights_for_mega_moe "
                             f"(got {type(lw).__name__}); transform the canonical weights first")
        if lw[0].device != buf.device:
            raise ValueError(f"{name} is on {lw[0].device} but the buffer is on {buf.device}")
        if lw.backend != buf.backend:
            raise ValueError(f"{name} were transformed for the {lw.backend} backend but the buffer uses "
                             f"{buf.backend}; pass the same backend= to both calls")
    e_l, i_l = buf.num_local_experts, buf.intermediate_hidden
    if tuple(l1[0].shape) != (e_l, 2 * i_l, h // 2):
        raise ValueError(f"l1 codes shape {tuple(l1[0].shape)} != expected [{e_l}, {2 * i_l}, {h // 2}] "
                         "(local experts, 2*intermediate, hidden/2)")
    if tuple(l2[0].shape) != (e_l, h, i_l // 2):
        raise ValueError(f"l2 codes shape {tuple(l2[0].shape)} != expected [{e_l}, {h}, {i_l // 2}]")
    if tuple(recipe) != (1, 1, 32):
        raise ValueError(f"recipe must be (1, 1, 32) (per-token MXFP8 x per-32 MXFP4), got {tuple(recipe)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if buf.backend == "deepgemm" and (activation != "swiglu" or biases != (None, None)):
        raise ValueError(f"the DeepGEMM backend computes activation='swiglu' without biases (got {activation!r}"
                         f"{', with biases' if biases != (None, None) else ''}); allocate the buffer and "
                         "transform the weights with backend='triton'")
    for name, bias, width in (("l1_bias", biases[0], 2 * i_l), ("l2_bias", biases[1], h)):
        if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32
                                 or tuple(bias.shape) != (e_l, width) or not bias.is_contiguous()
                                 or bias.device != buf.device):
            raise ValueError(f"{name} must be a contiguous fp32 [{e_l}, {width}] tensor on {buf.device}, got "
                             f"{getattr(bias, 'dtype', type(bias))} {tuple(getattr(bias, 'shape', ()))}")
    if activation_clamp is not None and (not isinstance(activation_clamp, (int, float))
                                         or not math.isfinite(activation_clamp) or activation_clamp < 0):
        raise ValueError(f"activation_clamp must be None or a finite float >= 0, got {activation_clamp!r}")
    if stats is not None:
        if (not isinstance(stats, torch.Tensor) or stats.dtype != torch.int32 or tuple(stats.shape) != (e_l,)
                or not stats.is_contiguous() or stats.device != buf.device):
            raise ValueError(f"cumulative_local_expert_recv_stats must be a contiguous int32 [{e_l}] tensor on "
                             f"{buf.device}, got {getattr(stats, 'dtype', type(stats))} "
                             f"{tuple(getattr(stats, 'shape', ()))}")
    if t and _values_checked():
        idx = buf.topk_idx[:t]
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1 or hi >= buf.num_experts:
            bad = lo if lo < -1 else hi
            raise ValueError(f"topk_idx contains expert id {bad}; valid ids are -1 (masked) and "
                             f"0..{buf.num_experts - 1}")
    return t


def fp8_fp4_mega_moe(y: torch.Tensor, l1_weights, l2_weights, sym_buffer: MegaMoEBuffer,
                     cumulative_local_expert_recv_stats: Optional[torch.Tensor] = None,
                     recipe: Sequence[int] = (1, 1, 32), activation: str = "swiglu",
                     activation_clamp: Optional[float] = None, fast_math: bool = True, *,
                     activation_alpha: float = OAI_ALPHA, l1_bias: Optional[torch.Tensor] = None,
                     l2_bias: Optional[torch.Tensor] = None,
                     gemm1_config: configs.GemmConfig | None = None,
                     gemm2_config: configs.GemmConfig | None = None,
                     cross_check: bool | None = None) -> None:
    """y[:T] = MoE(buffer.x[:T], ...) for T = y.shape[0] (DESIGN.md §1.1); writes y in place.

    activation: "swiglu" (DeepGEMM's) or "swiglu_oai" (gpt-oss: g * sigmoid(alpha g) * (u + 1), with
    `activation_alpha`, usually activation_clamp=7.0). l1_bias fp32 [E_local, 2I] / l2_bias fp32
    [E_local, H]: per-expert biases (gpt-oss), see `tmoe.reference.reference_moe` for where they enter.

    Raises ValueError (before any launch) on bad shapes, dtypes, devices, T > capacity, untransformed
    weights, and — outside CUDA-graph capture, unless TMOE_SKIP_VALUE_CHECKS=1 — expert ids outside
    [-1, E). During capture ids cannot be inspected; out-of-range ids are then treated as masked.
    """
    for _ in mega_moe_steps(y, l1_weights, l2_weights, sym_buffer, cumulative_local_expert_recv_stats, recipe,
                            activation, activation_clamp, fast_math, activation_alpha=activation_alpha,
                            l1_bias=l1_bias, l2_bias=l2_bias, gemm1_config=gemm1_config,
                            gemm2_config=gemm2_config, cross_check=cross_check):
        pass


def mega_moe_steps(y, l1_weights, l2_weights, buf, stats=None, recipe=(1, 1, 32), activation="swiglu",
                   activation_clamp=None, fast_math=True, *, activation_alpha=OAI_ALPHA, l1_bias=None,
                   l2_bias=None, gemm1_config=None, gemm2_config=None, cross_check=None):
    """`fp8_fp4_mega_moe` as a generator that yields between the halves of each cross-rank barrier of
    the symm_mem transport. The layer runs it to the end; the CPU tests step R simulated ranks in
    turn (`tmoe.dispatch.symm_mem.simulated_transports`)."""
    if isinstance(buf, MegaMoEBuffer) and buf.transport_impl is not None and _agreement_needed(buf):
        # Collective: every rank learns whether any rank's inputs are bad before data moves.
        error, t = None, 0
        try:
            t = _validate_call(y, l1_weights, l2_weights, buf, stats, recipe, activation, activation_clamp,
                               (l1_bias, l2_bias))
        except ValueError as exc:
            error = str(exc)
        # The symm_mem error word (a barrier of an earlier call timed out) rides in the same gather:
        # every rank raises, naming the rank that timed out and the peer it waited for.
        stuck = buf.transport_impl.agree(error, device_status=buf.symm.error[:1] if buf.symm is not None else None)
        if stuck:
            from .dispatch.symm_mem import SymmMemTimeout
            buf.symm.error.zero_()
            raise SymmMemTimeout("; ".join(buf.symm.describe_error(code, rank) for rank, code in stuck))
    else:
        t = _validate_call(y, l1_weights, l2_weights, buf, stats, recipe, activation, activation_clamp,
                           (l1_bias, l2_bias))
    if buf.backend == "deepgemm":
        _run_deepgemm(y, l1_weights, l2_weights, buf, stats, activation_clamp, fast_math, cross_check)
        return
    if cross_check or (cross_check is None and os.environ.get("TMOE_CROSS_CHECK", "0") not in ("", "0")):
        warnings.warn("tmoe cross-check requested, but this buffer runs the Triton backend (DeepGEMM cannot "
                      "serve this call: see tmoe.backend.explain_backend); nothing to compare against",
                      RuntimeWarning, stacklevel=3)
    opts = ExpertOptions(activation, activation_clamp, activation_alpha, fast_math, l1_bias, l2_bias,
                         gemm1_config, gemm2_config)
    soft = soft_numerics(y)
    topk_idx = buf.topk_idx[:t]
    shape = dict(opts=opts, stats=stats, soft=soft, layer_shape=(buf.num_experts, buf.num_topk))
    if buf.transport == "local":
        if t == 0:
            return
        compute_slots(buf, buf.x[:t], buf.x_sf[:t], topk_idx, buf.topk_weights[:t], l1_weights, l2_weights,
                      num_local_experts=buf.num_local_experts, expert_start=buf.expert_start, **shape)
        combine(buf.slot_out, topk_idx, y, pdl_launch=pdl.chain_on(y.device, t))
    elif buf.transport == "collective":   # every rank gets here, also with T = 0
        tr = buf.transport_impl
        got = tr.dispatch(buf.x[:t], buf.x_sf[:t], topk_idx, buf.topk_weights[:t])
        compute_slots(buf, got.x, got.x_sf, got.expert, got.weight, l1_weights, l2_weights,
                      num_local_experts=buf.num_local_experts, expert_start=0, **shape)
        tr.return_results(got, buf.slot_out[: got.x.shape[0]], buf.slot_home)
        combine(buf.slot_home, topk_idx, y, pdl_launch=pdl.chain_on(y.device, t))
    else:                                 # symm_mem: no host sync from here on (graph-capturable)
        tr = buf.symm
        fused = tr.fused_for(t * buf.num_topk)
        tma = tr.tma_for(t * buf.num_topk)     # the results go back by TMA stores (else SM stores)
        tr.dispatch(buf.x, buf.x_sf, topk_idx, buf.topk_weights[:t])
        yield
        recv_idx, recv_weight = tr.unpack(buf.x_dq, write_addr=fused, write_code=tma)
        # NOTES: rows are capacity-sized (R * T_max rows of K slots, mostly empty); tile configs and
        # the GEMM grids follow this rank's own slot count, the expected received count under
        # uniform routing (the GEMMs loop over whatever tiles there are).
        sent = compute_slots(buf, None, None, recv_idx, recv_weight, l1_weights, l2_weights,
                             num_local_experts=buf.num_local_experts, expert_start=0,
                             config_slots=max(t * buf.num_topk, 1),
                             out_row_addr=(tr.peer_rows() if tma else tr.home_addr) if fused else None, **shape)
        if sent:        # fused: GEMM2 stored the results in the sources' home
            tr.results_sent()
        else:
            tr.return_results(buf.slot_out, tma=tma)
        yield
        combine(tr.finish_return(), topk_idx, y, pdl_launch=pdl.chain_on(y.device, t))


def _agreement_needed(buf: MegaMoEBuffer) -> bool:
    """Exchange validation verdicts across ranks (a host sync)? Always for the collective transport
    (it syncs anyway); for symm_mem outside CUDA-graph capture unless TMOE_SKIP_VALUE_CHECKS=1."""
    return buf.transport == "collective" or _values_checked()


def _run_deepgemm(y, l1, l2, buf: MegaMoEBuffer, stats, activation_clamp, fast_math, cross_check) -> None:
    """Route the call to DeepGEMM; with cross-check on, also run Triton on the same inputs and compare."""
    from . import backend as backends
    t = y.shape[0]
    check = backends.cross_check_enabled(cross_check)
    if check:   # snapshot the inputs: DeepGEMM may recycle its buffer
        inputs = [v[:t].clone() for v in (buf.x, buf.x_sf, buf.topk_idx, buf.topk_weights)]
    backends._import_deep_gemm().fp8_fp4_mega_moe(
        y, tuple(l1), tuple(l2), buf.deepgemm_buffer, cumulative_local_expert_recv_stats=stats,
        recipe=(1, 1, 32), activation="swiglu", activation_clamp=activation_clamp, fast_math=fast_math)
    if check:
        y_triton = backends.run_triton(*inputs, l1.canonical, l2.canonical, num_experts=buf.num_experts,
                                       group=None if buf.num_ranks == 1 else buf.group,
                                       activation_clamp=activation_clamp, fast_math=fast_math)
        backends.cross_check(lambda: y_triton, lambda: y)


def fill_buffer(buf: MegaMoEBuffer, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor) -> int:
    """Quantize bf16 x [T, H] straight into the buffer and copy the routing; returns T."""
    t = x.shape[0]
    if t > buf.num_max_tokens_per_rank:
        raise ValueError(f"num_tokens={t} exceeds the buffer capacity {buf.num_max_tokens_per_rank}")
    if tuple(topk_idx.shape) != (t, buf.num_topk) or tuple(topk_weights.shape) != (t, buf.num_topk):
        raise ValueError(f"topk_idx / topk_weights must be [{t}, {buf.num_topk}], got "
                         f"{tuple(topk_idx.shape)} / {tuple(topk_weights.shape)}")
    per_token_cast_to_fp8(x, out=(buf.x, buf.x_sf))
    buf.topk_idx[:t].copy_(topk_idx)
    buf.topk_weights[:t].copy_(topk_weights)
    return t
