"""Bit-exact number-format helpers shared by the Triton kernels (DESIGN.md §2).

Every helper takes a `SOFT` constexpr. On a GPU (SOFT=False) conversions use the hardware
(`cvt.rn.bf16.f32`, `cvt.rn.satfinite.e4m3x2.f32`). Under the Triton 3.6 interpreter
(SOFT=True) those casts are not faithful (fp32 -> bf16 truncates, fp32 -> e4m3 mishandles
subnormals and overflow, e4m3 NaN decodes as 480, bf16 `tl.dot` is wrong), so the same results
are produced with integer arithmetic. Both paths are tested bitwise against `tmoe.formats`.
"""
import triton
import triton.language as tl


def soft_numerics(tensor) -> bool:
    """True when kernels run under the interpreter (CPU tensors): use the integer conversions."""
    return not tensor.is_cuda


@triton.jit
def e8m0_to_f32(b):
    """UE8M0 byte (any int type) -> exact fp32 2^(b-127); 0 -> 2^-127 (subnormal), 255 -> NaN."""
    b = b.to(tl.int32)
    bits = tl.where(b == 0, 0x00400000, b << 23)
    bits = tl.where(b == 255, 0x7FC00000, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def e4m3_to_f32(byte, SOFT: tl.constexpr):
    """E4M3 byte (uint8) -> fp32, exact (NaN bytes 0x7F / 0xFF -> NaN)."""
    v = byte.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    if SOFT:
        v = tl.where((byte & 0x7F) == 0x7F, float("nan"), v)
    return v


@triton.jit
def f32_to_bf16_bits(x, SOFT: tl.constexpr):
    """fp32 -> bf16 bit pattern (int16), round to nearest even, NaN kept."""
    if SOFT:
        bits = x.to(tl.int32, bitcast=True)
        r = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        r = tl.where(x != x, 0x7FC0, r)
        return r.to(tl.int16)
    else:
        return x.to(tl.bfloat16).to(tl.int16, bitcast=True)


@triton.jit
def bf16_bits_to_f32(bits):
    """bf16 bit pattern (int16) -> fp32 value, exact."""
    return (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def round_to_bf16(x, SOFT: tl.constexpr):
    """fp32 -> fp32 holding the nearest bf16 value (RNE)."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x, SOFT))


@triton.jit
def f32_to_e4m3_bits(x, SOFT: tl.constexpr):
    """fp32 -> E4M3 byte (uint8): RNE, |x| >= 464 and +-Inf saturate to +-448, NaN -> 0x7F|sign."""
    if SOFT:
        bits = x.to(tl.int32, bitcast=True)
        sign = (bits >> 24) & 0x80
        a = tl.abs(x)
        ab = a.to(tl.int32, bitcast=True)
        # Normal range: round the fp32 mantissa to 3 bits (RNE), rebias the exponent 127 -> 7.
        normal = ((ab + 0x7FFFF + ((ab >> 20) & 1)) >> 20) - (120 << 3)
        # Subnormal range (|x| < 2^-6): code = RNE(|x| * 2^9); 8 rolls over into 2^-6 exactly.
        sub = ((a * 512.0 + 8388608.0) - 8388608.0).to(tl.int32)
        code = tl.where(a < 0.015625, sub, normal)
        code = tl.minimum(code, 0x7E)
        code = tl.where(x != x, 0x7F, code)
        return (code | sign).to(tl.uint8)
    else:
        return x.to(tl.float8e4nv).to(tl.uint8, bitcast=True)


@triton.jit
def e2m1_to_f32(code):
    """E2M1 code (int32, 0..15; bit 3 = sign) -> exact fp32 value.

    NOTES: placing the 3 magnitude bits at fp32 bits 24..22 gives exponent e and mantissa m, i.e.
    2^(e-127) * (1 + m/2) (or the subnormal m * 2^-127 for e = 0); times 2^126 this is exactly
    the E2M1 magnitude {0, .5, 1, 1.5, 2, 3, 4, 6}.
    """
    bits = ((code & 0x7) << 22) | ((code & 0x8) << 28)
    return bits.to(tl.float32, bitcast=True) * 8.507059173023462e37  # 2^126


@triton.jit
def dequant_fp4_tile(codes, scales, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Packed FP4 bytes [ROWS, COLS/2] (uint8) and UE8M0 bytes [ROWS, COLS/32] -> fp32 [ROWS, COLS]."""
    c = codes.to(tl.int32)
    vals = tl.join(e2m1_to_f32(c & 0xF), e2m1_to_f32(c >> 4))       # [ROWS, COLS/2, 2]
    vals = tl.reshape(vals, [ROWS, COLS // 32, 32])
    vals = vals * e8m0_to_f32(scales)[:, :, None]
    return tl.reshape(vals, [ROWS, COLS])


@triton.jit
def dequant_fp8_tile(q, scales, ROWS: tl.constexpr, COLS: tl.constexpr, SOFT: tl.constexpr):
    """E4M3 bytes [ROWS, COLS] (uint8) and UE8M0 bytes [ROWS, COLS/32] -> fp32 [ROWS, COLS]."""
    vals = tl.reshape(e4m3_to_f32(q, SOFT), [ROWS, COLS // 32, 32])
    vals = vals * e8m0_to_f32(scales)[:, :, None]
    return tl.reshape(vals, [ROWS, COLS])


@triton.jit
def mxfp8_quantize_tile(v, ROWS: tl.constexpr, COLS: tl.constexpr, SOFT: tl.constexpr):
    """fp32 [ROWS, COLS] -> (E4M3 bytes [ROWS, COLS], UE8M0 exponent bytes [ROWS, COLS/32]).

    DESIGN.md §2.1: amax = max(max|x|, 1e-4) per 32 (NaN propagates), sf = ceil_to_ue8m0(amax/448)
    with a correctly rounded division, q = e4m3_rn(x * 2^-log2(sf)).
    """
    vb = tl.reshape(v, [ROWS, COLS // 32, 32])
    amax = tl.max(tl.abs(vb), axis=2)
    has_nan = tl.max((vb != vb).to(tl.int32), axis=2) > 0
    amax = tl.maximum(amax, 1e-4)
    q = tl.math.div_rn(amax, 448.0)
    qb = q.to(tl.int32, bitcast=True)
    exp = ((qb >> 23) & 0xFF) + ((qb & 0x7FFFFF) != 0).to(tl.int32)
    exp = tl.minimum(tl.maximum(exp, 1), 254)
    exp = tl.where(has_nan, 254, exp)
    inv = e8m0_to_f32(254 - exp)                                      # 1 / sf, exact
    codes = f32_to_e4m3_bits(vb * inv[:, :, None], SOFT)
    return tl.reshape(codes, [ROWS, COLS]), exp.to(tl.uint8)


# NOTES: E2M1 -> bf16 with byte permutes, 3 instructions per value (Hopper has no FP4 MMA).
# Per input word w = 4 code bytes (8 codes, low nibble first):
#   m = w & 0x77777777 holds the magnitude nibbles in element order; `prmt` with m's nibbles as
#   selectors looks 4 magnitudes up at once in an 8-entry byte table (one for the high bytes of
#   the bf16 values, one for the low bytes); two more `prmt` interleave them into bf16 pairs;
#   the sign bits (nibble bit 3) are moved to bit 15/31 with a `prmt` + `lop3`; finally one
#   `mul.rn.bf16x2` applies the UE8M0 scale (exact: a power of two). Outputs: the values of the
#   low nibbles and of the high nibbles, each [.., bytes], as bf16.
# NOTES: the tables and lookups every FP4 decoder here shares (also kernels/wgmma_gemm.py, so both
# produce the same exact values): for the code word in $4, hb0/lb0 = high/low bytes of the bf16
# magnitudes of nibbles 0..3, hb1/lb1 of nibbles 4..7. Declares nothing: the caller's `.reg` line must
# name m, mh, hb0, lb0, hb1, lb1, th0, th1, tl0, tl1.
FP4_MAGNITUDE_LOOKUP_PTX = """mov.b32 th0, 0x3F3F3F00;
mov.b32 th1, 0x40404040;
mov.b32 tl0, 0xC0800000;
mov.b32 tl1, 0xC0804000;
and.b32 m, $4, 0x77777777;
shr.u32 mh, m, 16;
prmt.b32 hb0, th0, th1, m;
prmt.b32 lb0, tl0, tl1, m;
prmt.b32 hb1, th0, th1, mh;
prmt.b32 lb1, tl0, tl1, mh;
"""
_FP4_TO_BF16_ASM = tl.constexpr("""
{
.reg .b32 m, mh, x, x4, hb0, lb0, hb1, lb1, t0, t1, t2, t3, s0, s1, s2, s3, th0, th1, tl0, tl1;
""" + FP4_MAGNITUDE_LOOKUP_PTX + """and.b32 x, $4, 0x88888888;
shl.b32 x4, x, 4;
prmt.b32 t0, lb0, hb0, 0x6240;
prmt.b32 t1, lb0, hb0, 0x7351;
prmt.b32 t2, lb1, hb1, 0x6240;
prmt.b32 t3, lb1, hb1, 0x7351;
prmt.b32 s0, x4, x, 0x1000;
prmt.b32 s1, x4, x, 0x5040;
prmt.b32 s2, x4, x, 0x3020;
prmt.b32 s3, x4, x, 0x7060;
lop3.b32 t0, t0, s0, 0x80008000, 0xF8;
lop3.b32 t1, t1, s1, 0x80008000, 0xF8;
lop3.b32 t2, t2, s2, 0x80008000, 0xF8;
lop3.b32 t3, t3, s3, 0x80008000, 0xF8;
mul.rn.bf16x2 $0, t0, $5;
mul.rn.bf16x2 $1, t2, $6;
mul.rn.bf16x2 $2, t1, $5;
mul.rn.bf16x2 $3, t3, $6;
}
""")


@triton.jit
def dequant_fp4_tile_bf16(codes, scales, ROWS: tl.constexpr, COLS: tl.constexpr, ASM: tl.constexpr):
    """Packed FP4 bytes [ROWS, COLS/2] + UE8M0 bytes [ROWS, COLS/32] -> exact bf16 [ROWS, COLS] (GPU)."""
    if ASM:
        s = scales.to(tl.int16)
        sbits = tl.where(s == 0, 0x40, s << 7)                  # bf16 bits of 2^(s-127)
        sbits = tl.reshape(tl.broadcast_to(tl.expand_dims(sbits, 2), [ROWS, COLS // 32, 16]), [ROWS, COLS // 2])
        lo, hi = tl.inline_asm_elementwise(_FP4_TO_BF16_ASM, "=r,=r,=r,=r,r,r,r", [codes, sbits],
                                           dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        return tl.reshape(tl.join(lo, hi), [ROWS, COLS])
    else:
        return dequant_fp4_tile(codes, scales, ROWS, COLS).to(tl.bfloat16)
