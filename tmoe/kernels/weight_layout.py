"""Byte order of the MXFP4 codes inside the Triton backend's transformed weights, and the padding of
their scale rows (`pad_scale_rows`).

"canonical": DESIGN.md §2.2 (byte j of a row holds codes 2j, 2j+1).
"tiled" (the default on Hopper: `layout="auto"` picks it when the weights live on an sm_90 GPU; force
any layout with `transform_weights_for_mega_moe(..., layout=...)` or TMOE_WEIGHT_LAYOUT): the quad
order below, with the rows in blocks of 32 stored K step by K step (`to_tiled`), so that a decode
tile reads one contiguous 2 KB run per 32 rows and K step instead of 64-byte pieces K/2 bytes apart.
Measured on H100 (benchmarks/NOTES.md "v8"): decode T=128 gpt-oss 958 -> 751 µs, dsv3 3284 -> 2538.
"quad": inside
every 64-byte block of a row (one 128-k GEMM step), the byte for logical position j = 16r + 4q + t
sits at 16t + 4r + q. Lane t of a wgmma A fragment (t = lane % 4) needs exactly bytes j = t (mod 4),
four per 32-k group r, so with this order its 16 loaded bytes are already its own, in decode order:
the Gluon kernel skips its quad exchange (54 of ~376 instructions per K step, benchmarks/NOTES.md).
Inside each 32-bit word of such a block the bits are laid out for the Gluon decode too (WORD_BITS: "arith"
when every scale is <= 2^1, else "signed"; NOTES "v10"). The Triton kernels undo both in registers.
Applied to every whole 64-byte block of tensors with K >= 128; when K % 128 != 0 the partial last
block stays canonical and the kernels run their exchange / skip the undo for that one K step (gpt-oss,
K = 2880). Results are bitwise the same in either layout. Measured on H100 (benchmarks/NOTES.md "v4",
"v7"): dsv3 T=128 -2%, T=512 -7%, qwen3 T=128 -10%, prefill unchanged; gpt-oss with v7's loads -10%.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LAYOUTS = ("auto", "canonical", "quad", "tiled")
QUAD_BLOCK_BYTES = 64
TILE_ROWS = 32


def default_layout() -> str:
    layout = os.environ.get("TMOE_WEIGHT_LAYOUT", "auto")
    if layout not in LAYOUTS:
        raise ValueError(f"TMOE_WEIGHT_LAYOUT must be one of {LAYOUTS}, got {layout!r}")
    return layout


def resolve_layout(layout: str, device: torch.device) -> str:
    """"auto" -> "tiled" for weights on an sm_90 GPU (the Gluon kernels gain from it: quad order, and
    each decode tile's K step one 2 KB run per 32 rows), else "canonical" (CPU / interpreter, other GPUs:
    no Gluon kernel reads it there)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    hopper = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9
    return "tiled" if hopper else "canonical"


def is_quad(weights) -> int:
    """Whether transformed weights (a TransformedWeights pair) hold their codes in the quad order (also
    inside the tiled layout), and with which word bits: 0 no (canonical), 1 WORD_BITS["signed"], 2 ["arith"].
    Pass it as `quad=` to the grouped-GEMM launchers (a kernel constexpr; truthy = quad order)."""
    if getattr(weights, "code_order", "canonical") not in ("quad", "tiled"):
        return 0
    return 2 if getattr(weights, "code_bits", "signed") == "arith" else 1


def word_bits_for(scales: torch.Tensor) -> str:
    """The word bits of quad-ordered codes with these UE8M0 scales: "arith" when every scale byte is <= 128
    (the arithmetic decode multiplies by 2^(s-1), a normal bf16 only up to s = 128; weights up to 12 in
    magnitude, i.e. every checkpoint seen), else "signed" (the lookup decode, any scale). One device sync."""
    return "arith" if scales.numel() == 0 or int(scales.max()) <= 128 else "signed"


def is_tiled(weights) -> bool:
    """Whether transformed weights hold their codes in the tiled layout (`to_tiled`); pass it as `tiled=`."""
    return getattr(weights, "code_order", "canonical") == "tiled"


def can_quad(codes: torch.Tensor) -> bool:
    """The quad order needs at least one whole 64-byte block (K >= 128) and whole 16-byte groups after it
    (K % 32 == 0). NOTES: K < 128 would gain nothing, and at K = 32 (scale row stride 1, which Triton
    specializes) the Triton 128x128 8-warp GEMM2 with the quad undo fails to compile on sm_90 (H100)."""
    return codes.shape[-1] >= QUAD_BLOCK_BYTES and codes.shape[-1] % 16 == 0


def _permute_blocks(codes: torch.Tensor, order: tuple) -> torch.Tensor:
    """Permute the bytes of every whole 64-byte block of each row (a partial last block stays canonical);
    `order` takes the block's (a, b, c) byte digits to the new order."""
    if not can_quad(codes):
        raise ValueError(f"quad layout needs K >= 128 and K % 32 == 0 (K/2 >= 64, K/2 % 16 == 0), got codes shape "
                         f"{tuple(codes.shape)}")
    lead, half_k = codes.shape[:-1], codes.shape[-1]
    whole = half_k // QUAD_BLOCK_BYTES * QUAD_BLOCK_BYTES
    out = torch.empty_like(codes, memory_format=torch.contiguous_format)
    blocks = codes[..., :whole].reshape(*lead, whole // QUAD_BLOCK_BYTES, 4, 4, 4)
    out[..., :whole] = blocks.permute(*range(len(lead) + 1), *(len(lead) + 1 + d for d in order)).reshape(
        *lead, whole)
    out[..., whole:] = codes[..., whole:]
    return out


# Bit layouts inside each 32-bit word (4 bytes, little endian) of a whole quad-ordered 64-byte block. A word
# holds 8 codes; canonically code n is nibble n (bit 4n: mantissa, 4n+1 / 4n+2: exponent, 4n+3: sign) and the
# Gluon decode turns codes (2i, 2i+1) into A register i. WORD_BITS[name][b] = where canonical bit b goes.
# "signed": magnitudes stay, the sign of code j (j < 4) at bit 8j + 7, of code 4 + j at bit 8j + 3, where the
#   lookup decode (wgmma_gemm._FP4_PAIRS_SIGNED_ASM) merges them without shuffles.
# "arith": register i's two codes at the bf16 positions mantissa 6 / exponent 7, 8 / sign 15 (+16 for the
#   second code), for register 0 as is, register 1 four places lower, register 2 rotated ten places right,
#   register 3 at the bits left (positions 6, 7, 15 six places lower, 8 two higher; wgmma_gemm._FP4_PAIRS_ARITH_ASM:
#   a few shifts and masks instead of table lookups; needs scales <= 2^1).
def _arith_bits() -> tuple:
    out = [0] * 32
    for i in range(4):
        for half, code in enumerate((2 * i, 2 * i + 1)):
            for b, pos in enumerate((6, 7, 8, 15)):
                p = pos + 16 * half
                out[4 * code + b] = (p, p - 4, (p - 10) % 32, p + 2 if pos == 8 else p - 6)[i]
    assert sorted(out) == list(range(32))
    return tuple(out)


WORD_BITS = {
    "signed": tuple(4 * n + b if b < 3 else (8 * n + 7 if n < 4 else 8 * (n - 4) + 3)
                    for n in range(8) for b in range(4)),
    "arith": _arith_bits(),
}
CODE_BITS = tuple(WORD_BITS)


def _permute_word_bits(codes: torch.Tensor, bits: str, forward: bool) -> torch.Tensor:
    """Canonical <-> WORD_BITS[bits] inside every word of the whole 64-byte blocks of `codes`, in place.
    NOTES: int64 temporaries, one leading index at a time (a whole dsv3 w1 at once would need ~8x its 3.8 GB)."""
    if bits not in WORD_BITS:
        raise ValueError(f"bits must be one of {CODE_BITS}, got {bits!r}")
    if not codes.is_contiguous():
        raise ValueError("_permute_word_bits works in place on a contiguous tensor")
    whole = codes.shape[-1] // QUAD_BLOCK_BYTES * QUAD_BLOCK_BYTES
    moves = list(enumerate(WORD_BITS[bits])) if forward else [(d, s) for s, d in enumerate(WORD_BITS[bits])]
    groups: dict = {}                       # one shift + mask per distance
    for src, dst in moves:
        groups[dst - src] = groups.get(dst - src, 0) | (1 << src)
    flat = codes.reshape(-1, codes.shape[-2] if codes.dim() > 1 else 1, codes.shape[-1])
    for part in flat:                       # views of `codes`
        b = part[:, :whole].reshape(part.shape[0], whole // 4, 4).to(torch.int64) & 0xFF
        w = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
        out = torch.zeros_like(w)
        for dist, mask in groups.items():
            out |= ((w & mask) << dist) if dist >= 0 else ((w & mask) >> -dist)
        part[:, :whole] = torch.stack([(out >> (8 * i)) & 0xFF for i in range(4)], -1).reshape(
            part.shape[0], whole).to(torch.uint8).view(codes.dtype)
    return codes


def to_quad(codes: torch.Tensor, bits: str = "signed") -> torch.Tensor:
    """Canonical codes [..., K/2] -> quad order (a new contiguous tensor): the bytes permuted, then the bits
    of every word of the whole 64-byte blocks laid out as WORD_BITS[bits]."""
    return _permute_word_bits(_permute_blocks(codes, (2, 0, 1)), bits, True)   # logical (r, q, t) -> (t, r, q)


def from_quad(codes: torch.Tensor, bits: str = "signed") -> torch.Tensor:
    """Quad order -> canonical (the inverse of `to_quad` with the same `bits`)."""
    unpermuted = _permute_word_bits(codes.clone(memory_format=torch.contiguous_format), bits, False)
    return _permute_blocks(unpermuted, (1, 2, 0))     # stored (t, r, q) -> logical (r, q, t)


@triton.jit
def _canonical_words(w, ARITH: tl.constexpr):
    """uint32 words laid out as WORD_BITS["arith"] (ARITH) or ["signed"] -> canonical (one shift + mask per
    distance, generated from WORD_BITS; tests/test_weight_layout.py checks it against `from_quad`)."""
    if ARITH:
        return (((w & 0x80000000) >> 24) | ((w & 0x1c00000) >> 18) | ((w & 0x78008000) >> 12) | ((w & 0x1c01c0) >> 6)
                | (w & 0x800) | ((w & 0x200000) << 2) | ((w & 0x4000000) << 4) | ((w & 0x200001c) << 6)
                | ((w & 0x7000) << 8) | ((w & 0x30000) << 12) | ((w & 0x20) << 14) | ((w & 0x400) << 16)
                | ((w & 0x200) << 18) | ((w & 0x3) << 24))
    return (((w & 0x80000000) >> 16) | ((w & 0x800000) >> 12) | ((w & 0x8000) >> 8) | ((w & 0x80) >> 4)
            | (w & 0x77777777) | ((w & 0x8000000) << 4) | ((w & 0x80000) << 8) | ((w & 0x800) << 12)
            | ((w & 0x8) << 16))


@triton.jit
def quad_to_canonical_tile(c, ROWS: tl.constexpr, ARITH: tl.constexpr):
    """One whole K step's code tile [ROWS, 64] as loaded from quad-ordered weights -> canonical byte order
    (a partial last step is stored canonical: do not call this on it): each 32-bit word's bits put back
    (`_permute_word_bits`), then the bytes."""
    pos = tl.arange(0, 4)[None, None, :]
    b = tl.reshape(c, [ROWS, 16, 4]).to(tl.uint32) & 0xFF
    w = tl.sum(b << (8 * pos).to(tl.uint32), axis=2)                 # the words (little endian), disjoint bits
    canon = _canonical_words(w, ARITH)
    c = tl.reshape(((canon[:, :, None] >> (8 * pos).to(tl.uint32)) & 0xFF).to(c.dtype), [ROWS, 64])
    return tl.reshape(tl.permute(tl.reshape(c, [ROWS, 4, 4, 4]), (0, 2, 3, 1)), [ROWS, 64])


SCALE_ROW_ALIGN = 4


def pad_scale_rows(scales: torch.Tensor) -> torch.Tensor:
    """UE8M0 scales [..., K/32] -> the same values with every row starting SCALE_ROW_ALIGN-byte aligned:
    a view of a buffer whose rows are padded with 127 (2^0) to a multiple of 4 bytes (contiguous as is
    when K/32 % 4 == 0). NOTES: the Gluon kernels then load a K step's 4 scale bytes of a row as one
    32-bit word (wgmma_gemm.scale_words; gpt-oss, K/32 = 90, needs the padding); the padding is never
    used as a scale (the kernels mask it: 127 only keeps it harmless)."""
    groups = scales.shape[-1]
    padded = -(-groups // SCALE_ROW_ALIGN) * SCALE_ROW_ALIGN
    if padded == groups:
        return scales.contiguous()
    out = torch.full((*scales.shape[:-1], padded), 127, dtype=scales.dtype, device=scales.device)
    out[..., :groups] = scales
    return out[..., :groups]


def can_tile(codes: torch.Tensor) -> bool:
    """The tiled layout: quad order (`can_quad`) and whole 32-row blocks (N % 32 == 0, always true for the
    layer's weights: N is 2I or H)."""
    return can_quad(codes) and codes.shape[-2] % TILE_ROWS == 0


def to_tiled(codes: torch.Tensor, bits: str = "signed") -> torch.Tensor:
    """Canonical codes [..., N, K/2] -> the tiled layout, same shape, contiguous: the quad order, with each
    32-row block's bytes stored K step by K step — step s of rows 32b..32b+31 is one contiguous 2 KB chunk
    (row r at byte 64 * (r % 32)), the partial last step (K % 128 != 0) a chunk of 32 shorter rows after
    the whole ones. NOTES: a decode tile then reads 2 KB runs per K step instead of 64-byte pieces of 32
    rows K/2 bytes apart (the kernels: wgmma_gemm._code_rows, grouped_gemm._load_weight_codes)."""
    if not can_tile(codes):
        raise ValueError(f"tiled layout needs K >= 128, K % 32 == 0 and N % {TILE_ROWS} == 0, got codes shape "
                         f"{tuple(codes.shape)}")
    quad = to_quad(codes, bits)
    *lead, n, half_k = quad.shape
    whole = half_k // QUAD_BLOCK_BYTES * QUAD_BLOCK_BYTES
    blocks = quad[..., :whole].reshape(*lead, n // TILE_ROWS, TILE_ROWS, whole // QUAD_BLOCK_BYTES, QUAD_BLOCK_BYTES)
    parts = [blocks.transpose(-3, -2).reshape(*lead, n // TILE_ROWS, TILE_ROWS * whole),
             quad[..., whole:].reshape(*lead, n // TILE_ROWS, TILE_ROWS * (half_k - whole))]
    return torch.cat(parts, -1).reshape(*lead, n, half_k)


def from_tiled(codes: torch.Tensor, bits: str = "signed") -> torch.Tensor:
    """The tiled layout -> canonical codes (the inverse of `to_tiled`)."""
    *lead, n, half_k = codes.shape
    whole = half_k // QUAD_BLOCK_BYTES * QUAD_BLOCK_BYTES
    flat = codes.reshape(*lead, n // TILE_ROWS, TILE_ROWS * half_k)
    blocks = flat[..., :TILE_ROWS * whole].reshape(*lead, n // TILE_ROWS, whole // QUAD_BLOCK_BYTES, TILE_ROWS,
                                                    QUAD_BLOCK_BYTES)
    rows = torch.cat([blocks.transpose(-3, -2).reshape(*lead, n // TILE_ROWS, TILE_ROWS, whole),
                      flat[..., TILE_ROWS * whole:].reshape(*lead, n // TILE_ROWS, TILE_ROWS, half_k - whole)], -1)
    return from_quad(rows.reshape(*lead, n, half_k), bits)
