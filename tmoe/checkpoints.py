"""Expert-weight loaders: gpt-oss MXFP4, DeepSeek-V4 FP4 and HF bf16 checkpoints -> canonical MXFP4.

Every loader reads ONE layer through ``safetensors.safe_open`` (headers first, then only the
tensors of that layer, and for fused ``[E, ...]`` tensors only this rank's experts through
``get_slice``), so a model is never held in memory whole. The result is an :class:`ExpertWeights`
in tmoe's canonical form (DESIGN.md §2.2): ``w1`` int8 ``[E_local, 2I, H/2]`` with rows
``[gate (I) | up (I)]``, ``w1_sf`` uint8 ``[E_local, 2I, H/32]``, ``w2`` int8 ``[E_local, H, I/2]``,
``w2_sf`` uint8 ``[E_local, H, I/32]`` (low nibble = even element, UE8M0 scale ``2^(b-127)``), and
optional fp32 biases ``b1 [E_local, 2I]`` (same row order as ``w1``) and ``b2 [E_local, H]``.

On-disk formats (verified against public code with the code search; see docs/models.md)
------------------------------------------------------------------------------------------
``"gpt-oss"`` (HF naming, ``openai/gpt-oss-20b|120b`` root folder)
    ``model.layers.{l}.mlp.experts.gate_up_proj_blocks`` uint8 ``[E, 2I, H/32, 16]``,
    ``..gate_up_proj_scales`` uint8 ``[E, 2I, H/32]``, ``..gate_up_proj_bias`` bf16 ``[E, 2I]``,
    ``..down_proj_blocks`` uint8 ``[E, H, I/32, 16]``, ``..down_proj_scales`` ``[E, H, I/32]``,
    ``..down_proj_bias`` ``[E, H]`` (router: ``model.layers.{l}.mlp.router.weight|bias``).
``"gpt-oss-original"`` (openai naming, the ``original/`` folder)
    ``block.{l}.mlp.mlp1_weight.blocks|scales``, ``block.{l}.mlp.mlp1_bias``,
    ``block.{l}.mlp.mlp2_weight.blocks|scales``, ``block.{l}.mlp.mlp2_bias`` with the same shapes
    (router: ``block.{l}.mlp.gate.weight|bias``).

    Facts (openai/gpt-oss ``gpt_oss/torch/weights.py`` ``Checkpoint._get_mxfp4_tensor``, copied as
    ``convert_moe_packed_tensors`` into HF transformers ``integrations/mxfp4.py``):
    ``idx_lo = blk & 0x0F`` -> element ``0::2``, ``idx_hi = blk >> 4`` -> element ``1::2`` (low
    nibble = even element, as tmoe's canonical form); ``scales.to(int32) - 127`` then ``ldexp``
    (UE8M0 with bias 127, as canonical); the 16 bytes of a block are 32 consecutive K elements,
    so ``blocks.reshape(E, N, K/2)`` is the canonical code tensor byte for byte. Rows of
    ``mlp1``/``gate_up`` are interleaved: ``gpt_oss/torch/model.py`` ``swiglu`` takes
    ``x_glu, x_linear = x[..., ::2], x[..., 1::2]`` (HF ``GptOssExperts``: ``gate_up[..., ::2]``,
    ``gate_up[..., 1::2]``), so even rows are gate and odd rows up; the loader de-interleaves
    once into ``[gate | up]`` (codes, scales and ``b1``). NOTE gpt-oss's activation is not the
    SwiGLU of DESIGN.md §1.1: ``(clamp(up, ±7) + 1) * g * sigmoid(1.702 g)`` with
    ``g = min(gate, 7)``, and ``b2`` is added before the routing weight multiplies.
``"deepseek-v4"`` (DeepSeek-V4-Flash native names, no ``model.`` prefix)
    ``layers.{l}.ffn.experts.{e}.w{1,2,3}.weight`` int8 ``[N, K/2]`` (two E2M1 codes per byte) and
    ``layers.{l}.ffn.experts.{e}.w{1,2,3}.scale`` float8_e8m0fnu (``F8_E8M0``) ``[N, K/32]``;
    ``w1`` = gate ``[I, H/2]``, ``w3`` = up, ``w2`` = down ``[H, I/2]`` (router:
    ``layers.{l}.ffn.gate.weight`` and the selection bias ``layers.{l}.ffn.gate.bias``). Sources:
    vLLM ``models/deepseek_v4.py`` (``make_deepseek_v4_expert_params_mapping`` w1/w3 -> w13 rows
    ``[w1 | w3]``, ``.scale`` keys, ``float8_e8m0fnu`` scales viewed as uint8, and the raw bytes
    handed unchanged to DeepGEMM ``transform_weights_for_mega_moe`` — i.e. the same nibble order and
    scale bytes as DeepGEMM's canonical MXFP4), ktransformers' ``MXFP4SafeTensorLoader``
    (``I8 [N, K/2]`` / ``F8_E8M0 [N, K/32]``). The prefixes ``model.layers.{l}.ffn.experts`` and
    ``model.layers.{l}.mlp.experts`` are accepted too.
``"hf-bf16"`` (Qwen2/3-MoE, DeepSeek bf16 conversions, ...)
    ``model.layers.{l}.mlp.experts.{e}.gate_proj|up_proj|down_proj.weight`` bf16/fp16/fp32
    (``[I, H]``, ``[I, H]``, ``[H, I]``), or Mixtral's ``model.layers.{l}.block_sparse_moe.experts.
    {e}.w1|w3|w2.weight``; quantized here with :func:`tmoe.formats.quantize_mxfp4`.

Errors: a missing key, a wrong shape or dtype, a UE8M0 scale byte 255 (NaN) and a non-finite
bias or bf16 weight raise ``ValueError`` naming the tensor key.

Writers: :func:`write_synthetic_checkpoint` produces small random checkpoints in each of these
exact on-disk formats and returns the float weights it encoded (tests, examples).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .formats import BLOCK, dequantize_mxfp4, quantize_mxfp4

__all__ = [
    "FORMATS", "ExpertWeights", "FloatExperts", "load_experts", "load_gpt_oss_experts",
    "load_deepseek_v4_experts", "load_hf_bf16_experts", "load_router_weights",
    "detect_format", "write_synthetic_checkpoint",
]

FORMATS = ("gpt-oss", "gpt-oss-original", "deepseek-v4", "hf-bf16")

_ST_DTYPES = {
    "U8": torch.uint8, "I8": torch.int8, "BF16": torch.bfloat16, "F16": torch.float16,
    "F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64,
    "F8_E8M0": getattr(torch, "float8_e8m0fnu", None), "F8_E4M3": torch.float8_e4m3fn,
}
_FLOAT_ST = ("BF16", "F16", "F32")


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ExpertWeights:
    """Canonical MXFP4 expert weights of one layer, sliced to one rank's experts.

    ``w1`` int8 [E_local, 2I, H/2] (rows [gate | up]), ``w1_sf`` uint8 [E_local, 2I, H/32],
    ``w2`` int8 [E_local, H, I/2], ``w2_sf`` uint8 [E_local, H, I/32]; ``b1`` fp32 [E_local, 2I]
    and ``b2`` fp32 [E_local, H] or None. Local expert j is global expert ``expert_offset + j``.
    """
    w1: torch.Tensor
    w1_sf: torch.Tensor
    w2: torch.Tensor
    w2_sf: torch.Tensor
    b1: Optional[torch.Tensor] = None
    b2: Optional[torch.Tensor] = None
    num_experts: int = 0        # global E
    expert_offset: int = 0      # global id of local expert 0

    @property
    def num_local_experts(self) -> int:
        return self.w1.shape[0]

    @property
    def hidden(self) -> int:
        return self.w2.shape[1]

    @property
    def intermediate(self) -> int:
        return self.w1.shape[1] // 2

    def to(self, device) -> "ExpertWeights":
        mv = (lambda t: None if t is None else t.to(device))
        return ExpertWeights(mv(self.w1), mv(self.w1_sf), mv(self.w2), mv(self.w2_sf), mv(self.b1), mv(self.b2),
                             self.num_experts, self.expert_offset)


@dataclass(frozen=True)
class FloatExperts:
    """Float (fp32) expert weights of one layer as a synthetic checkpoint encodes them:
    ``w1`` [E, 2I, H] rows [gate | up], ``w2`` [E, H, I], ``b1`` [E, 2I] / ``b2`` [E, H] or None."""
    w1: torch.Tensor
    w2: torch.Tensor
    b1: Optional[torch.Tensor] = None
    b2: Optional[torch.Tensor] = None


# ----------------------------------------------------------------------------- checkpoint access
class _Checkpoint:
    """Key -> file map of a safetensors checkpoint (a file, or a folder with or without
    ``model.safetensors.index.json``); tensors are read one at a time through ``safe_open``."""

    def __init__(self, path):
        try:
            from safetensors import safe_open  # noqa: F401
        except ImportError as e:  # pragma: no cover
            raise ImportError("tmoe.checkpoints needs the 'safetensors' package (pip install safetensors)") from e
        path = os.fspath(path)
        self.path = path
        self.key_to_file: dict[str, str] = {}
        if os.path.isfile(path):
            self._scan([path])
        elif os.path.isdir(path):
            index = os.path.join(path, "model.safetensors.index.json")
            if os.path.isfile(index):
                with open(index) as f:
                    weight_map = json.load(f).get("weight_map", {})
                self.key_to_file = {k: os.path.join(path, v) for k, v in weight_map.items()}
            else:
                files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
                if not files:
                    raise ValueError(f"no .safetensors files in {path}")
                self._scan(files)
        else:
            raise ValueError(f"checkpoint path {path} does not exist")

    def _scan(self, files):
        from safetensors import safe_open
        for fn in files:
            with safe_open(fn, framework="pt") as f:
                for k in f.keys():
                    self.key_to_file[k] = fn

    def has(self, key: str) -> bool:
        return key in self.key_to_file

    def keys(self):
        return self.key_to_file.keys()

    def _file(self, key: str) -> str:
        if key not in self.key_to_file:
            raise ValueError(f"checkpoint {self.path} has no tensor {key!r}")
        return self.key_to_file[key]

    def meta(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, safetensors dtype string) from the file header, without reading the data."""
        from safetensors import safe_open
        with safe_open(self._file(key), framework="pt") as f:
            if key not in f.keys():
                raise ValueError(f"tensor {key!r} is listed in the index but missing from {self._file(key)}")
            s = f.get_slice(key)
            return tuple(s.get_shape()), s.get_dtype()

    def get(self, key: str, start: Optional[int] = None, stop: Optional[int] = None) -> torch.Tensor:
        """The tensor (or rows [start:stop] of its first dimension, read alone)."""
        from safetensors import safe_open
        with safe_open(self._file(key), framework="pt") as f:
            if start is None:
                return f.get_tensor(key)
            return f.get_slice(key)[start:stop]


def _check_meta(ckpt: _Checkpoint, key: str, shape: Sequence[int], dtypes: Sequence[str]) -> None:
    got_shape, got_dtype = ckpt.meta(key)
    if tuple(got_shape) != tuple(shape):
        raise ValueError(f"tensor {key!r} has shape {tuple(got_shape)}, expected {tuple(shape)}")
    if got_dtype not in dtypes:
        raise ValueError(f"tensor {key!r} has dtype {got_dtype}, expected one of {tuple(dtypes)}")


def _as_u8(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype != torch.uint8 else t


def _check_scales(t: torch.Tensor, key: str) -> torch.Tensor:
    t = _as_u8(t)
    if bool((t == 255).any()):
        n = int((t == 255).sum())
        raise ValueError(f"tensor {key!r} contains {n} UE8M0 scale byte(s) 255 (NaN)")
    return t


def _check_finite(t: torch.Tensor, key: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"tensor {key!r} contains NaN or Inf")
    return t


def _rank_range(num_experts: int, rank: int, num_ranks: int) -> tuple[int, int]:
    if isinstance(num_ranks, bool) or not isinstance(num_ranks, int) or num_ranks < 1:
        raise ValueError(f"num_ranks must be a positive int, got {num_ranks!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_ranks:
        raise ValueError(f"rank must be an int in [0, {num_ranks}), got {rank!r}")
    if num_experts % num_ranks:
        raise ValueError(f"num_experts={num_experts} is not divisible by num_ranks={num_ranks}")
    el = num_experts // num_ranks
    return rank * el, (rank + 1) * el


def _deinterleave_rows(t: torch.Tensor) -> torch.Tensor:
    """[E, 2I, ...] rows (g0, u0, g1, u1, ...) -> [gate (I) | up (I)]."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1).contiguous()


def _interleave_rows(t: torch.Tensor) -> torch.Tensor:
    """Inverse of `_deinterleave_rows`: [gate | up] -> (g0, u0, g1, u1, ...)."""
    i = t.shape[1] // 2
    return torch.stack([t[:, :i], t[:, i:]], dim=2).reshape(t.shape).contiguous()


def _check_layer(layer) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a non-negative int, got {layer!r}")


# ----------------------------------------------------------------------------- gpt-oss
_GPT_OSS_KEYS = {
    "gpt-oss": ("model.layers.{l}.mlp.experts.", "gate_up_proj_blocks", "gate_up_proj_scales", "gate_up_proj_bias",
                "down_proj_blocks", "down_proj_scales", "down_proj_bias"),
    "gpt-oss-original": ("block.{l}.mlp.", "mlp1_weight.blocks", "mlp1_weight.scales", "mlp1_bias",
                         "mlp2_weight.blocks", "mlp2_weight.scales", "mlp2_bias"),
}


def load_gpt_oss_experts(path, layer: int, *, rank: int = 0, num_ranks: int = 1, naming: str = "auto",
                         device=None, _ckpt: Optional[_Checkpoint] = None) -> ExpertWeights:
    """gpt-oss MXFP4 experts of one layer -> canonical (rows de-interleaved to [gate | up]).

    ``naming``: "gpt-oss" (HF: ``model.layers.{l}.mlp.experts.gate_up_proj_blocks``...),
    "gpt-oss-original" (openai: ``block.{l}.mlp.mlp1_weight.blocks``...) or "auto".
    """
    _check_layer(layer)
    ckpt = _ckpt or _Checkpoint(path)
    if naming == "auto":
        cands = [n for n, v in _GPT_OSS_KEYS.items() if ckpt.has(v[0].format(l=layer) + v[1])]
        if not cands:
            raise ValueError(f"checkpoint {ckpt.path} has no gpt-oss experts for layer {layer}: neither "
                             f"{'model.layers.%d.mlp.experts.gate_up_proj_blocks' % layer!r} nor "
                             f"{'block.%d.mlp.mlp1_weight.blocks' % layer!r}")
        naming = cands[0]
    if naming not in _GPT_OSS_KEYS:
        raise ValueError(f"naming must be 'auto', 'gpt-oss' or 'gpt-oss-original', got {naming!r}")
    pre, *names = _GPT_OSS_KEYS[naming]
    k_b1, k_s1, k_bias1, k_b2, k_s2, k_bias2 = (pre.format(l=layer) + n for n in names)
    if not ckpt.has(k_b1):
        raise ValueError(f"checkpoint {ckpt.path} has no {naming} experts for layer {layer}: no tensor {k_b1!r}")

    shape_b1, dt = ckpt.meta(k_b1)
    if len(shape_b1) != 4 or shape_b1[3] != 16 or shape_b1[1] % 2:
        raise ValueError(f"tensor {k_b1!r} has shape {shape_b1}, expected [E, 2I, H/32, 16] with 2I even")
    if dt not in ("U8", "I8"):
        raise ValueError(f"tensor {k_b1!r} has dtype {dt}, expected U8")
    e, two_i, h_blocks, _ = shape_b1
    hidden, inter = h_blocks * BLOCK, two_i // 2
    if inter % BLOCK:
        raise ValueError(f"tensor {k_b1!r}: intermediate size {inter} (= rows/2) is not a multiple of {BLOCK}")
    _check_meta(ckpt, k_s1, (e, two_i, h_blocks), ("U8", "F8_E8M0"))
    _check_meta(ckpt, k_bias1, (e, two_i), _FLOAT_ST)
    _check_meta(ckpt, k_b2, (e, hidden, inter // BLOCK, 16), ("U8", "I8"))
    _check_meta(ckpt, k_s2, (e, hidden, inter // BLOCK), ("U8", "F8_E8M0"))
    _check_meta(ckpt, k_bias2, (e, hidden), _FLOAT_ST)
    e0, e1 = _rank_range(e, rank, num_ranks)

    el = e1 - e0
    w1 = _as_u8(ckpt.get(k_b1, e0, e1)).reshape(el, two_i, hidden // 2)
    s1 = _check_scales(ckpt.get(k_s1, e0, e1), k_s1)
    b1 = _check_finite(ckpt.get(k_bias1, e0, e1).float(), k_bias1)
    w2 = _as_u8(ckpt.get(k_b2, e0, e1)).reshape(el, hidden, inter // 2)
    s2 = _check_scales(ckpt.get(k_s2, e0, e1), k_s2)
    b2 = _check_finite(ckpt.get(k_bias2, e0, e1).float(), k_bias2)
    out = ExpertWeights(
        w1=_deinterleave_rows(w1).view(torch.int8), w1_sf=_deinterleave_rows(s1),
        w2=w2.contiguous().view(torch.int8), w2_sf=s2.contiguous(),
        b1=_deinterleave_rows(b1), b2=b2.contiguous(), num_experts=e, expert_offset=e0)
    return out.to(device) if device is not None else out


# ----------------------------------------------------------------------------- per-expert formats
_V4_PREFIXES = ("layers.{l}.ffn.experts", "model.layers.{l}.ffn.experts", "model.layers.{l}.mlp.experts")
_HF_NAMINGS = (("model.layers.{l}.mlp.experts", ("gate_proj", "up_proj", "down_proj")),
               ("model.layers.{l}.block_sparse_moe.experts", ("w1", "w3", "w2")))


def _count_experts(ckpt: _Checkpoint, prefix: str, first_proj: str) -> int:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\." + re.escape(first_proj) + r"\.weight$")
    ids = [int(m.group(1)) for k in ckpt.keys() if (m := pat.match(k))]
    return max(ids) + 1 if ids else 0


def load_deepseek_v4_experts(path, layer: int, *, rank: int = 0, num_ranks: int = 1,
                             num_experts: Optional[int] = None, device=None,
                             _ckpt: Optional[_Checkpoint] = None) -> ExpertWeights:
    """DeepSeek-V4 FP4 experts (``layers.{l}.ffn.experts.{e}.w1|w2|w3.weight`` int8 [N, K/2] +
    ``.scale`` e8m0 [N, K/32]) -> canonical; w1 rows = [w1 (gate) | w3 (up)], w2 = down."""
    _check_layer(layer)
    ckpt = _ckpt or _Checkpoint(path)
    prefix = next((p.format(l=layer) for p in _V4_PREFIXES if ckpt.has(p.format(l=layer) + ".0.w1.weight")), None)
    if prefix is None:
        raise ValueError(f"checkpoint {ckpt.path} has no DeepSeek-V4 experts for layer {layer}: no tensor "
                         f"{_V4_PREFIXES[0].format(l=layer) + '.0.w1.weight'!r}")
    e = num_experts if num_experts is not None else _count_experts(ckpt, prefix, "w1")
    if isinstance(e, bool) or not isinstance(e, int) or e < 1:
        raise ValueError(f"num_experts must be a positive int, got {e!r}")
    (inter, h_half), _ = ckpt.meta(prefix + ".0.w1.weight")
    hidden = 2 * h_half
    for name, v in (("hidden", hidden), ("intermediate", inter)):
        if v % BLOCK:
            raise ValueError(f"tensor {prefix + '.0.w1.weight'!r}: {name} size {v} is not a multiple of {BLOCK}")
    expected = {"w1": (inter, hidden), "w3": (inter, hidden), "w2": (hidden, inter)}
    # headers of every expert first (missing keys / shapes / dtypes fail before any data is read)
    for x in range(e):
        for proj, (n, k) in expected.items():
            base = f"{prefix}.{x}.{proj}"
            _check_meta(ckpt, base + ".weight", (n, k // 2), ("I8", "U8"))
            _check_meta(ckpt, base + ".scale", (n, k // BLOCK), ("F8_E8M0", "U8"))
    e0, e1 = _rank_range(e, rank, num_ranks)
    w1, s1, w2, s2 = [], [], [], []
    for x in range(e0, e1):
        parts = {}
        for proj in ("w1", "w3", "w2"):
            base = f"{prefix}.{x}.{proj}"
            parts[proj] = (_as_u8(ckpt.get(base + ".weight")), _check_scales(ckpt.get(base + ".scale"), base + ".scale"))
        w1.append(torch.cat([parts["w1"][0], parts["w3"][0]], dim=0))
        s1.append(torch.cat([parts["w1"][1], parts["w3"][1]], dim=0))
        w2.append(parts["w2"][0])
        s2.append(parts["w2"][1])
    out = ExpertWeights(w1=torch.stack(w1).view(torch.int8), w1_sf=torch.stack(s1),
                        w2=torch.stack(w2).view(torch.int8), w2_sf=torch.stack(s2),
                        num_experts=e, expert_offset=e0)
    return out.to(device) if device is not None else out


def load_hf_bf16_experts(path, layer: int, *, rank: int = 0, num_ranks: int = 1,
                         num_experts: Optional[int] = None, rounding: str = "toward_zero", device=None,
                         _ckpt: Optional[_Checkpoint] = None) -> ExpertWeights:
    """HF bf16 experts (``model.layers.{l}.mlp.experts.{e}.gate_proj|up_proj|down_proj.weight``, or
    Mixtral ``block_sparse_moe.experts.{e}.w1|w3|w2``) quantized to canonical MXFP4 with
    :func:`tmoe.formats.quantize_mxfp4` (``rounding`` as there)."""
    _check_layer(layer)
    ckpt = _ckpt or _Checkpoint(path)
    found = next(((p.format(l=layer), n) for p, n in _HF_NAMINGS
                  if ckpt.has(f"{p.format(l=layer)}.0.{n[0]}.weight")), None)
    if found is None:
        raise ValueError(f"checkpoint {ckpt.path} has no bf16 experts for layer {layer}: no tensor "
                         f"{_HF_NAMINGS[0][0].format(l=layer) + '.0.gate_proj.weight'!r}")
    prefix, (g_name, u_name, d_name) = found
    e = num_experts if num_experts is not None else _count_experts(ckpt, prefix, g_name)
    if isinstance(e, bool) or not isinstance(e, int) or e < 1:
        raise ValueError(f"num_experts must be a positive int, got {e!r}")
    (inter, hidden), _ = ckpt.meta(f"{prefix}.0.{g_name}.weight")
    for name, v in (("hidden", hidden), ("intermediate", inter)):
        if v <= 0 or v % BLOCK:
            raise ValueError(f"tensor {prefix + '.0.' + g_name + '.weight'!r}: {name} size {v} is not a "
                             f"positive multiple of {BLOCK}")
    shapes = {g_name: (inter, hidden), u_name: (inter, hidden), d_name: (hidden, inter)}
    for x in range(e):
        for proj, shp in shapes.items():
            _check_meta(ckpt, f"{prefix}.{x}.{proj}.weight", shp, _FLOAT_ST)
    e0, e1 = _rank_range(e, rank, num_ranks)
    w1, s1, w2, s2 = [], [], [], []
    for x in range(e0, e1):
        t = {}
        for proj in (g_name, u_name, d_name):
            key = f"{prefix}.{x}.{proj}.weight"
            t[proj] = _check_finite(ckpt.get(key), key)
        c, s = quantize_mxfp4(torch.cat([t[g_name], t[u_name]], dim=0), rounding=rounding)
        w1.append(c)
        s1.append(s)
        c, s = quantize_mxfp4(t[d_name], rounding=rounding)
        w2.append(c)
        s2.append(s)
    out = ExpertWeights(w1=torch.stack(w1), w1_sf=torch.stack(s1), w2=torch.stack(w2), w2_sf=torch.stack(s2),
                        num_experts=e, expert_offset=e0)
    return out.to(device) if device is not None else out


# ----------------------------------------------------------------------------- dispatch
def detect_format(path, layer: int = 0) -> str:
    """Which of FORMATS a checkpoint holds (looked up from the keys of `layer`)."""
    return _detect(_Checkpoint(path), layer)


def _detect(ckpt: _Checkpoint, layer: int) -> str:
    if ckpt.has(f"model.layers.{layer}.mlp.experts.gate_up_proj_blocks"):
        return "gpt-oss"
    if ckpt.has(f"block.{layer}.mlp.mlp1_weight.blocks"):
        return "gpt-oss-original"
    if any(ckpt.has(p.format(l=layer) + ".0.w1.weight") and ckpt.has(p.format(l=layer) + ".0.w1.scale")
           for p in _V4_PREFIXES):
        return "deepseek-v4"
    if any(ckpt.has(f"{p.format(l=layer)}.0.{n[0]}.weight") for p, n in _HF_NAMINGS):
        return "hf-bf16"
    raise ValueError(f"checkpoint {ckpt.path}: no expert tensors of a known format for layer {layer}")


def load_experts(path, layer: int, format: str = "auto", *, rank: int = 0, num_ranks: int = 1,
                 device=None, **kwargs) -> ExpertWeights:
    """Load one layer's experts of `path` (a .safetensors file or a checkpoint folder) in canonical
    MXFP4, sliced to experts ``[rank*E/num_ranks, (rank+1)*E/num_ranks)``.

    format: one of FORMATS or "auto". Extra keyword arguments go to the format's loader
    (``num_experts`` for the per-expert formats, ``rounding`` for "hf-bf16").
    """
    ckpt = _Checkpoint(path)
    _check_layer(layer)
    if format == "auto":
        format = _detect(ckpt, layer)
    if format in ("gpt-oss", "gpt-oss-original"):
        return load_gpt_oss_experts(path, layer, rank=rank, num_ranks=num_ranks, naming=format, device=device,
                                    _ckpt=ckpt, **kwargs)
    if format == "deepseek-v4":
        return load_deepseek_v4_experts(path, layer, rank=rank, num_ranks=num_ranks, device=device, _ckpt=ckpt,
                                        **kwargs)
    if format == "hf-bf16":
        return load_hf_bf16_experts(path, layer, rank=rank, num_ranks=num_ranks, device=device, _ckpt=ckpt,
                                    **kwargs)
    raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")


_ROUTER_KEYS = {
    "gpt-oss": ("model.layers.{l}.mlp.router.weight", "model.layers.{l}.mlp.router.bias"),
    "gpt-oss-original": ("block.{l}.mlp.gate.weight", "block.{l}.mlp.gate.bias"),
    "deepseek-v4": ("layers.{l}.ffn.gate.weight", "layers.{l}.ffn.gate.bias"),
    "hf-bf16": ("model.layers.{l}.mlp.gate.weight", "model.layers.{l}.mlp.gate.e_score_correction_bias"),
}


def load_router_weights(path, layer: int, format: str = "auto") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Router of one layer as fp32 ``(weight [E, H], bias [E] or None)``. For gpt-oss the bias is
    added to the logits (``logits = x @ W.T + b``); for DeepSeek-V4 (and HF ``e_score_correction_bias``)
    it is the selection bias to pass as ``route(..., bias=...)``."""
    ckpt = _Checkpoint(path)
    _check_layer(layer)
    if format == "auto":
        format = _detect(ckpt, layer)
    if format not in _ROUTER_KEYS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    wk, bk = (k.format(l=layer) for k in _ROUTER_KEYS[format])
    w = _check_finite(ckpt.get(wk).float(), wk)
    b = _check_finite(ckpt.get(bk).float(), bk) if ckpt.has(bk) else None
    return w, b


# ----------------------------------------------------------------------------- synthetic writers
def _random_float_experts(gen: torch.Generator, e: int, n: int, k: int) -> torch.Tensor:
    """Random weights [e, n, k] whose 32-blocks span many magnitudes (exercises the scale bytes)."""
    w = torch.randn(e, n, k, generator=gen)
    mag = torch.randint(-10, 4, (e, n, k // BLOCK), generator=gen).float().exp2()
    return (w.reshape(e, n, k // BLOCK, BLOCK) * mag.unsqueeze(-1)).reshape(e, n, k)


def write_synthetic_checkpoint(path, format: str, num_layers: int = 1, num_experts: int = 4, hidden: int = 64,
                               intermediate: int = 32, seed: int = 0) -> list[FloatExperts]:
    """Write a small random checkpoint in the exact on-disk `format` (one of FORMATS) to folder `path`.

    One ``.safetensors`` file per layer (plus ``model.safetensors.index.json`` when there are several
    layers; a single layer is written as ``model.safetensors``), with the router tensors too.
    Returns, per layer, the fp32 weights encoded: for the MXFP4 formats the exact dequantized values
    of the stored codes (so ``dequantize_mxfp4`` of the loaded canonical tensors equals them
    bitwise), for "hf-bf16" the stored bf16 values; ``w1`` rows are [gate | up].
    """
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    for name, v in (("num_layers", num_layers), ("num_experts", num_experts)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    for name, v in (("hidden", hidden), ("intermediate", intermediate)):
        if v <= 0 or v % BLOCK:
            raise ValueError(f"{name} must be a positive multiple of {BLOCK}, got {v}")
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    e, h, i = num_experts, hidden, intermediate
    out: list[FloatExperts] = []
    weight_map: dict[str, str] = {}
    for layer in range(num_layers):
        w1f = _random_float_experts(gen, e, 2 * i, h)             # rows [gate | up]
        w2f = _random_float_experts(gen, e, h, i)
        router_w = (torch.randn(e, h, generator=gen) * h ** -0.5).to(torch.bfloat16)
        tensors: dict[str, torch.Tensor] = {}
        if format in ("gpt-oss", "gpt-oss-original", "deepseek-v4"):
            c1, s1 = quantize_mxfp4(w1f)
            c2, s2 = quantize_mxfp4(w2f)
            w1f, w2f = dequantize_mxfp4(c1, s1), dequantize_mxfp4(c2, s2)
        if format in ("gpt-oss", "gpt-oss-original"):
            b1 = torch.randn(e, 2 * i, generator=gen).to(torch.bfloat16)
            b2 = torch.randn(e, h, generator=gen).to(torch.bfloat16)
            blocks1 = _interleave_rows(c1.view(torch.uint8)).reshape(e, 2 * i, h // BLOCK, 16)
            blocks2 = c2.view(torch.uint8).reshape(e, h, i // BLOCK, 16).contiguous()
            pre, *names = _GPT_OSS_KEYS[format]
            pre = pre.format(l=layer)
            vals = (blocks1, _interleave_rows(s1), _interleave_rows(b1), blocks2, s2.contiguous(), b2)
            tensors.update({pre + n: v for n, v in zip(names, vals)})
            rw, rb = (k.format(l=layer) for k in _ROUTER_KEYS[format])
            tensors[rw] = router_w
            tensors[rb] = torch.randn(e, generator=gen).to(torch.bfloat16)
            out.append(FloatExperts(w1f, w2f, b1.float(), b2.float()))
        elif format == "deepseek-v4":
            e8m0 = getattr(torch, "float8_e8m0fnu", None)
            as_scale = (lambda s: s.contiguous().view(e8m0)) if e8m0 is not None else (lambda s: s.contiguous())
            pre = _V4_PREFIXES[0].format(l=layer)
            for x in range(e):
                parts = {"w1": (c1[x, :i], s1[x, :i]), "w3": (c1[x, i:], s1[x, i:]), "w2": (c2[x], s2[x])}
                for proj, (c, s) in parts.items():
                    tensors[f"{pre}.{x}.{proj}.weight"] = c.contiguous()
                    tensors[f"{pre}.{x}.{proj}.scale"] = as_scale(s)
            rw, rb = (k.format(l=layer) for k in _ROUTER_KEYS[format])
            tensors[rw] = router_w
            tensors[rb] = (torch.randn(e, generator=gen) * 0.01).float()
            out.append(FloatExperts(w1f, w2f))
        else:  # hf-bf16
            w1b, w2b = w1f.to(torch.bfloat16), w2f.to(torch.bfloat16)
            prefix, (g, u, d) = _HF_NAMINGS[0]
            prefix = prefix.format(l=layer)
            for x in range(e):
                tensors[f"{prefix}.{x}.{g}.weight"] = w1b[x, :i].contiguous()
                tensors[f"{prefix}.{x}.{u}.weight"] = w1b[x, i:].contiguous()
                tensors[f"{prefix}.{x}.{d}.weight"] = w2b[x].contiguous()
            rw, rb = (k.format(l=layer) for k in _ROUTER_KEYS[format])
            tensors[rw] = router_w
            tensors[rb] = (torch.randn(e, generator=gen) * 0.01).float()
            out.append(FloatExperts(w1b.float(), w2b.float()))
        fname = "model.safetensors" if num_layers == 1 else f"model-{layer + 1:05d}-of-{num_layers:05d}.safetensors"
        save_file(tensors, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
    if num_layers > 1:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
    return out
