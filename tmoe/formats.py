"""The tmoe number formats (DESIGN.md §2) in plain torch: the specification every kernel matches.

Everything here runs on CPU and GPU and is bit-exact by construction:

* UE8M0 scales: one biased exponent byte, value ``2^(byte - 127)`` (byte 255 is NaN).
* MXFP8 activations: E4M3 values with one UE8M0 scale per 32 channels, the scale bytes packed
  four per little-endian int32 word (DeepGEMM's ``per_token_cast_to_fp8(x, use_ue8m0=True,
  gran_k=32, use_packed_ue8m0=True)``).
* MXFP4 weights: E2M1 codes two per byte (low nibble = even element), one UE8M0 byte per 32
  K-elements, canonical shapes ``codes int8 [E, N, K/2]`` and ``scales uint8 [E, N, K/32]``.

Non-finite inputs (documented behaviour, tested): a 32-block that contains NaN or +-Inf gets scale
byte 254 (``2^127``); its NaN elements become the E4M3 NaN byte ``0x7F`` (+ sign), +-Inf saturate
to +-448 (E4M3 has no infinity; this is PTX ``cvt.satfinite`` and torch's own cast), and its finite
elements are scaled by ``2^-127`` (so they flush to zero). Other blocks and other rows are unaffected.
"""
from __future__ import annotations

import torch

__all__ = [
    "BLOCK", "E4M3_MAX", "E2M1_MAX", "E2M1_VALUES", "PAD_SCALE_BYTE",
    "ceil_to_ue8m0", "ue8m0_exponent", "e8m0_to_float",
    "fp32_to_e4m3", "quantize_mxfp8", "dequantize_mxfp8",
    "pack_ue8m0", "unpack_ue8m0", "packed_scale_words",
    "quantize_mxfp4", "dequantize_mxfp4", "pack_fp4", "unpack_fp4", "e2m1_to_float",
    "check_hidden",
]

BLOCK = 32                   # channels per scale (the "gran_k" of DeepGEMM)
E4M3_MAX = 448.0
E2M1_MAX = 6.0
AMAX_FLOOR = 1e-4            # max(amax, 1e-4) before the scale is derived
PAD_SCALE_BYTE = 127         # scale byte (2^0) that pads a partial packed int32 word
# Magnitudes of the 8 E2M1 codes; bit 3 of a code is the sign.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# DeepGEMM's `_quantize_to_fp4_e2m1` counts |x| > boundary: ties go toward zero.
_E2M1_BOUNDARIES = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def check_hidden(name: str, value: int) -> None:
    """Raise ValueError unless `value` (a channel count) is a positive multiple of 32."""
    if value <= 0 or value % BLOCK != 0:
        raise ValueError(f"{name} must be a positive multiple of {BLOCK}, got {value}")


def packed_scale_words(channels: int) -> int:
    """Number of int32 words that hold one row's packed UE8M0 scales: ceil(channels / 128)."""
    return (channels // BLOCK + 3) // 4


# ----------------------------------------------------------------------------- UE8M0 scales
def ue8m0_exponent(x: torch.Tensor) -> torch.Tensor:
    """Biased exponent byte (uint8) of `ceil_to_ue8m0(x)` for fp32 `x` (positive; NaN/Inf -> 254).

    exp = ((bits >> 23) & 0xFF) + (mantissa != 0), clamped to [1, 254].
    """
    if x.dtype != torch.float32:
        raise ValueError(f"ue8m0_exponent expects float32, got {x.dtype}")
    bits = x.view(torch.int32)
    exp = (bits >> 23) & 0xFF
    exp = exp + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return exp.clamp(1, 254).to(torch.uint8)


def e8m0_to_float(byte: torch.Tensor) -> torch.Tensor:
    """Exact fp32 value of UE8M0 bytes: 2^(b-127); b = 0 gives 2^-127 (subnormal), b = 255 NaN."""
    b = byte.to(torch.int32)
    val = torch.where(b == 0, torch.full_like(b, 0x00400000), b << 23).view(torch.float32)
    return torch.where(b == 255, torch.full_like(val, float("nan")), val)


def ceil_to_ue8m0(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x (fp32, positive), clamped to [2^-126, 2^127]."""
    return e8m0_to_float(ue8m0_exponent(x))


def pack_ue8m0(exponents: torch.Tensor) -> torch.Tensor:
    """Pack uint8 scale bytes [..., B] into int32 words [..., ceil(B/4)], byte j of word i =
    block 4i+j (little-endian); a partial last word is padded with byte 127 (2^0)."""
    if exponents.dtype != torch.uint8:
        raise ValueError(f"pack_ue8m0 expects uint8 scale bytes, got {exponents.dtype}")
    nblocks = exponents.shape[-1]
    words = (nblocks + 3) // 4
    pad = words * 4 - nblocks
    if pad:
        fill = torch.full((*exponents.shape[:-1], pad), PAD_SCALE_BYTE, dtype=torch.uint8,
                          device=exponents.device)
        exponents = torch.cat([exponents, fill], dim=-1)
    b = exponents.reshape(*exponents.shape[:-1], words, 4).to(torch.int64)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
    word = torch.where(word >= 2**31, word - 2**32, word)
    return word.to(torch.int32).contiguous()


def unpack_ue8m0(words: torch.Tensor, nblocks: int) -> torch.Tensor:
    """Inverse of `pack_ue8m0`: int32 words [..., W] -> uint8 bytes [..., nblocks]."""
    if words.dtype != torch.int32:
        raise ValueError(f"unpack_ue8m0 expects int32 words, got {words.dtype}")
    if nblocks > 4 * words.shape[-1]:
        raise ValueError(f"nblocks={nblocks} does not fit in {words.shape[-1]} packed words")
    w = words.to(torch.int64) & 0xFFFFFFFF
    b = torch.stack([(w >> (8 * j)) & 0xFF for j in range(4)], dim=-1)
    b = b.reshape(*words.shape[:-1], 4 * words.shape[-1])[..., :nblocks]
    return b.to(torch.uint8).contiguous()


# ----------------------------------------------------------------------------- MXFP8
def fp32_to_e4m3(v: torch.Tensor) -> torch.Tensor:
    """fp32 -> float8_e4m3fn, round to nearest even, +-Inf and |v| >= 464 saturate to +-448, NaN -> NaN.

    For finite |v| < 464 this is exactly torch's `.to(torch.float8_e4m3fn)`; the clamp pins down
    the overflow behaviour, which torch versions have not always agreed on.
    """
    q = v.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    nan_byte = ((v.view(torch.int32) < 0).to(torch.uint8) << 7) | 0x7F
    return torch.where(torch.isnan(v), nan_byte, q).view(torch.float8_e4m3fn)   # no host sync


def quantize_mxfp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token MXFP8 cast (DESIGN.md §2.1): x [T, H] (bf16/fp16/fp32) -> (x_fp8 [T, H] e4m3,
    x_sf int32 [T, ceil(H/128)] packed UE8M0)."""
    if x.dim() != 2:
        raise ValueError(f"quantize_mxfp8 expects a 2-D [tokens, hidden] tensor, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"quantize_mxfp8 expects bf16/fp16/fp32, got {x.dtype}")
    t, h = x.shape
    check_hidden("hidden", h)
    xb = x.float().reshape(t, h // BLOCK, BLOCK)
    amax = xb.abs().amax(dim=-1)                       # NaN propagates (torch.amax)
    amax = torch.where(torch.isnan(amax), amax, amax.clamp_min(AMAX_FLOOR))
    exp = ue8m0_exponent(amax / E4M3_MAX)
    inv = e8m0_to_float((254 - exp.to(torch.int32)).to(torch.uint8))   # 1/sf, exact
    q = fp32_to_e4m3(xb * inv.unsqueeze(-1)).reshape(t, h)
    return q, pack_ue8m0(exp)


def dequantize_mxfp8(x_fp8: torch.Tensor, x_sf: torch.Tensor) -> torch.Tensor:
    """Exact fp32 values of MXFP8 data: x_fp8 [T, H] e4m3, x_sf int32 [T, ceil(H/128)]."""
    t, h = x_fp8.shape
    sf = e8m0_to_float(unpack_ue8m0(x_sf, h // BLOCK))
    return (x_fp8.float().reshape(t, h // BLOCK, BLOCK) * sf.unsqueeze(-1)).reshape(t, h)


# ----------------------------------------------------------------------------- MXFP4
def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8 0..15) [..., K] -> int8 [..., K/2], low nibble = even element."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_fp4 needs an even last dimension, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).view(torch.int8).contiguous()


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """int8/uint8 [..., K/2] -> E2M1 codes uint8 [..., K]."""
    p = packed.view(torch.uint8)
    return torch.stack([p & 0xF, p >> 4], dim=-1).reshape(*p.shape[:-1], 2 * p.shape[-1])


def e2m1_to_float(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (0..15) -> fp32 values."""
    table = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32,
                         device=codes.device)
    return table[codes.long()]


def _e2m1_round(mag: torch.Tensor, rounding: str) -> torch.Tensor:
    """Magnitudes (fp32, already scaled, >= 0) -> E2M1 magnitude codes 0..7."""
    if rounding == "toward_zero":
        # DeepGEMM: code = number of boundaries strictly below |x| (ties toward zero).
        code = torch.zeros_like(mag, dtype=torch.uint8)
        for b in _E2M1_BOUNDARIES:
            code += (mag > b).to(torch.uint8)
        return code
    if rounding == "rtne":
        # Round to nearest, ties to the even code (OCP MX / triton_kernels); saturate at 6.
        values = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=mag.device)
        dist = (mag.unsqueeze(-1) - values).abs()
        best = dist.min(dim=-1, keepdim=True).values
        cand = (dist == best) & ((torch.arange(8, device=mag.device) % 2) == 0)
        # A tie always has one even neighbour; a non-tie has a unique nearest code.
        tie = (dist == best).sum(-1) > 1
        nearest = dist.argmin(dim=-1)
        even = cand.to(torch.uint8).argmax(dim=-1)
        return torch.where(tie, even, nearest).to(torch.uint8)
    raise ValueError(f"rounding must be 'toward_zero' or 'rtne', got {rounding!r}")


def quantize_mxfp4(w: torch.Tensor, rounding: str = "toward_zero") -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical MXFP4 (DESIGN.md §2.2): w [..., N, K] float -> (codes int8 [..., N, K/2],
    scales uint8 [..., N, K/32]); sf = ceil_to_ue8m0(max(amax, 1e-4) / 6)."""
    if not w.is_floating_point():
        raise ValueError(f"quantize_mxfp4 expects a floating tensor, got {w.dtype}")
    if w.dim() < 2:
        raise ValueError(f"quantize_mxfp4 expects [..., N, K], got shape {tuple(w.shape)}")
    k = w.shape[-1]
    check_hidden("K (last dim)", k)
    wb = w.float().reshape(*w.shape[:-1], k // BLOCK, BLOCK)
    amax = wb.abs().amax(dim=-1).clamp_min(AMAX_FLOOR)
    if not bool(torch.isfinite(amax).all()):
        raise ValueError("quantize_mxfp4: weights contain NaN or Inf")
    exp = ue8m0_exponent(amax / E2M1_MAX)
    inv = e8m0_to_float((254 - exp.to(torch.int32)).to(torch.uint8))
    scaled = wb * inv.unsqueeze(-1)
    mag = _e2m1_round(scaled.abs(), rounding)
    # No negative zero: the sign bit is set only on a non-zero code.
    sign = ((scaled < 0) & (mag > 0)).to(torch.uint8) << 3
    codes = (mag | sign).reshape(*w.shape)
    return pack_fp4(codes), exp


def dequantize_mxfp4(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Exact fp32 values of canonical MXFP4: codes int8 [..., N, K/2], scales uint8 [..., N, K/32]."""
    vals = e2m1_to_float(unpack_fp4(codes))
    k = vals.shape[-1]
    if scales.shape[-1] * BLOCK != k:
        raise ValueError(f"scales last dim {scales.shape[-1]} does not match K={k} (K/32 expected)")
    sf = e8m0_to_float(scales)
    return (vals.reshape(*vals.shape[:-1], k // BLOCK, BLOCK) * sf.unsqueeze(-1)).reshape(vals.shape)
