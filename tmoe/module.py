"""`MegaMoE`: the layer as a torch module (quantize + fill the buffer + run) for model code."""
from __future__ import annotations

import torch

from .layer import fill_buffer, fp8_fp4_mega_moe, get_symm_buffer_for_mega_moe, transform_weights_for_mega_moe
from .reference import ACTIVATIONS, OAI_ALPHA, MoEWeights

__all__ = ["MegaMoE"]


class MegaMoE(torch.nn.Module):
    """y = MegaMoE(...)(x_bf16, topk_idx, topk_weights): the W4A8 MoE of DESIGN.md §1.1.

    Holds this rank's experts as canonical MXFP4 buffers (`w1`, `w1_sf`, `w2`, `w2_sf`) plus their
    backend layout. Set them with `load_weights` (MXFP4) or `load_float_weights` (quantizes).
    With `group=None` the token buffer grows on demand; `max_num_tokens` sets its first size.
    """

    def __init__(self, num_experts: int, hidden: int, intermediate: int, top_k: int, group=None,
                 activation_clamp: float | None = None, max_num_tokens: int = 256, fast_math: bool = True,
                 device: torch.device | str | None = None, activation: str = "swiglu",
                 activation_alpha: float = OAI_ALPHA, bias: bool = False, backend: str | None = None):
        super().__init__()
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.num_experts, self.hidden, self.intermediate, self.top_k = num_experts, hidden, intermediate, top_k
        self.group, self.activation_clamp, self.fast_math = group, activation_clamp, fast_math
        self.activation, self.activation_alpha = activation, activation_alpha
        # DeepGEMM computes plain SwiGLU without biases: anything else stays on Triton.
        self.backend = "triton" if (activation != "swiglu" or bias) and backend is None else backend
        self.buffer = get_symm_buffer_for_mega_moe(group, num_experts, max_num_tokens, top_k, hidden,
                                                   intermediate, device=device, backend=self.backend)
        e = self.buffer.num_local_experts
        self.register_buffer("w1", torch.zeros(e, 2 * intermediate, hidden // 2, dtype=torch.int8, device=device))
        self.register_buffer("w1_sf", torch.full((e, 2 * intermediate, hidden // 32), 127, dtype=torch.uint8,
                                                 device=device))
        self.register_buffer("w2", torch.zeros(e, hidden, intermediate // 2, dtype=torch.int8, device=device))
        self.register_buffer("w2_sf", torch.full((e, hidden, intermediate // 32), 127, dtype=torch.uint8,
                                                 device=device))
        if bias:
            self.register_buffer("b1", torch.zeros(e, 2 * intermediate, dtype=torch.float32, device=device))
            self.register_buffer("b2", torch.zeros(e, hidden, dtype=torch.float32, device=device))
        else:
            self.b1 = self.b2 = None
        self._transformed = None

    @classmethod
    def from_checkpoint(cls, path, layer: int, format: str = "auto", group=None, *, top_k: int | None = None,
                        max_num_tokens: int = 256, device=None, **kwargs) -> "MegaMoE":
        """Build the layer for one MoE layer of a safetensors checkpoint (this rank's experts only).

        Formats (`tmoe.checkpoints`): "gpt-oss" / "gpt-oss-original" (MXFP4 + biases; activation
        swiglu_oai, clamp 7.0, top-k 4), "deepseek-v4" (FP4 experts; swiglu, clamp 10.0, top-k 6),
        "hf-bf16" (quantized on load; swiglu, no clamp; top_k required). Keyword arguments override
        these defaults (activation, activation_clamp, ...).
        """
        from . import checkpoints
        if format == "auto":
            format = checkpoints.detect_format(path, layer)
        rank, num_ranks = (0, 1) if group is None else (group.rank(), group.size())
        ew = checkpoints.load_experts(path, layer, format, rank=rank, num_ranks=num_ranks, device=device)
        defaults = {"gpt-oss": dict(activation="swiglu_oai", activation_clamp=7.0, top_k=4),
                    "gpt-oss-original": dict(activation="swiglu_oai", activation_clamp=7.0, top_k=4),
                    "deepseek-v4": dict(activation="swiglu", activation_clamp=10.0, top_k=6),
                    "hf-bf16": dict(activation="swiglu", activation_clamp=None, top_k=None)}[format]
        defaults.update(kwargs)
        k = top_k if top_k is not None else defaults.pop("top_k")
        defaults.pop("top_k", None)
        if k is None:
            raise ValueError(f"top_k is required for format {format!r} (the checkpoint does not record it)")
        layer_mod = cls(ew.num_experts, ew.hidden, ew.intermediate, k, group=group, max_num_tokens=max_num_tokens,
                        device=device, bias=ew.b1 is not None, **defaults)
        return layer_mod.load_weights(ew.w1, ew.w1_sf, ew.w2, ew.w2_sf, b1=ew.b1, b2=ew.b2)

    @property
    def weights(self) -> MoEWeights:
        return MoEWeights(self.w1, self.w1_sf, self.w2, self.w2_sf)

    def load_weights(self, w1, w1_sf, w2, w2_sf, b1=None, b2=None) -> "MegaMoE":
        """Copy canonical MXFP4 weights of this rank's experts (DESIGN.md §2.2), and biases if the
        layer has them (b1 fp32 [E_local, 2I], b2 fp32 [E_local, H])."""
        if (b1 is not None or b2 is not None) and self.b1 is None:
            raise ValueError("biases given but the layer was built with bias=False")
        pairs = [("w1", w1), ("w1_sf", w1_sf), ("w2", w2), ("w2_sf", w2_sf)]
        pairs += [(n, b) for n, b in (("b1", b1), ("b2", b2)) if b is not None]
        for name, src in pairs:
            dst = getattr(self, name)
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"{name} must have shape {tuple(dst.shape)}, got {tuple(src.shape)}")
            dst.copy_(src.view(dst.dtype) if src.dtype in (torch.int8, torch.uint8) else src)
        self._transformed = None
        return self

    def load_float_weights(self, w1: torch.Tensor, w2: torch.Tensor, rounding: str = "toward_zero") -> "MegaMoE":
        """Quantize float w1 [E_local, 2I, H] ([gate | up]) and w2 [E_local, H, I] to MXFP4 and load."""
        q = MoEWeights.quantize(w1.to(self.w1.device), w2.to(self.w1.device), rounding)
        return self.load_weights(q.w1, q.w1_sf, q.w2, q.w2_sf)

    def _layout(self):
        if self._transformed is None:
            self._transformed = transform_weights_for_mega_moe((self.w1, self.w1_sf), (self.w2, self.w2_sf),
                                                               backend=self.buffer.backend)
        return self._transformed

    def _ensure_capacity(self, num_tokens: int) -> None:
        buf = self.buffer
        if num_tokens <= buf.num_max_tokens_per_rank:
            return
        if self.group is not None:
            raise ValueError(f"num_tokens={num_tokens} exceeds max_num_tokens={buf.num_max_tokens_per_rank}; "
                             "an expert-parallel buffer cannot grow, construct the module with a larger one")
        buf.destroy()
        self.buffer = get_symm_buffer_for_mega_moe(None, self.num_experts, num_tokens, self.top_k, self.hidden,
                                                   self.intermediate, device=buf.device, backend=buf.backend)

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.hidden:
            raise ValueError(f"x must be [num_tokens, {self.hidden}], got {tuple(x.shape)}")
        self._ensure_capacity(x.shape[0])
        t = fill_buffer(self.buffer, x, topk_idx, topk_weights)
        y = torch.empty((t, self.hidden), dtype=torch.bfloat16, device=x.device)
        l1, l2 = self._layout()
        fp8_fp4_mega_moe(y, l1, l2, self.buffer, activation=self.activation, activation_clamp=self.activation_clamp,
                         fast_math=self.fast_math, activation_alpha=self.activation_alpha, l1_bias=self.b1,
                         l2_bias=self.b2)
        return y

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden={self.hidden}, intermediate={self.intermediate}, "
                f"top_k={self.top_k}, activation={self.activation}, activation_clamp={self.activation_clamp}, "
                f"bias={self.b1 is not None}, backend={self.buffer.backend}, transport={self.buffer.transport}")
