"""Independent pure-Python float helpers shared by the format and reference tests (struct/frexp based,
deliberately not the tmoe code under test)."""
from __future__ import annotations

import bisect
import math
import struct

F32_1EM4 = struct.unpack("<f", struct.pack("<f", 1e-4))[0]          # fp32(1e-4)
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def f32(v: float) -> float:
    """Round a Python float to the nearest fp32 value (RNE); overflow -> +-inf."""
    if math.isnan(v) or math.isinf(v):
        return v
    try:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def f32_from_bits(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b & 0xFFFFFFFF))[0]


def bits_of_f32(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


def pow2_byte(v: float) -> int:
    """Biased exponent of the smallest power of two >= v (via frexp), clamped to [1, 254]."""
    if math.isnan(v) or math.isinf(v):
        return 254
    if v <= 0:
        return 1
    m, e = math.frexp(v)            # v = m * 2^e, 0.5 <= m < 1
    p = e - 1 if m == 0.5 else e    # exact power of two 2^(e-1), else round up to 2^e
    return min(max(p + 127, 1), 254)


def bf16_rn(v: float) -> float:
    """bf16_rn of the fp32 value of v (round to nearest even on the top 16 bits)."""
    x = f32(v)
    if math.isnan(x) or math.isinf(x):
        return x
    b = bits_of_f32(x)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return f32_from_bits(b)


def e4m3_decode(b: int) -> float:
    """float8_e4m3fn byte -> value (bias 7, no infinities, S.1111.111 = NaN)."""
    sign = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 0xF, b & 0x7
    if e == 15 and m == 7:
        return math.nan
    if e == 0:
        return sign * math.ldexp(m / 8.0, -6)
    return sign * math.ldexp(1.0 + m / 8.0, e - 7)


E4M3_POS = [e4m3_decode(b) for b in range(0x7F)]   # bytes 0x00..0x7E, strictly increasing


def e4m3_encode(v: float, negative: bool | None = None) -> int:
    """fp32 value -> e4m3fn byte: nearest, ties to the even byte, saturate at 448, keep the sign."""
    if negative is None:
        negative = math.copysign(1.0, v) < 0
    sign = 0x80 if negative else 0
    if math.isnan(v):
        return sign | 0x7F
    a = abs(v)
    if a >= 448.0:
        return sign | 0x7E
    i = bisect.bisect_right(E4M3_POS, a) - 1
    lo, hi = E4M3_POS[i], E4M3_POS[i + 1]
    if a == lo:
        return sign | i
    dl, dh = a - lo, hi - a                        # exact in double
    if dl < dh:
        c = i
    elif dh < dl:
        c = i + 1
    else:
        c = i if i % 2 == 0 else i + 1
    return sign | c


def py_mxfp8_row(vals: list) -> tuple[list, list]:
    """One row (fp32-valued Python floats, no NaN) -> (e4m3 bytes, scale bytes), DESIGN §2.1."""
    qb, sb = [], []
    for b0 in range(0, len(vals), 32):
        blk = vals[b0:b0 + 32]
        if any(math.isnan(v) for v in blk):
            amax = math.nan
        else:
            amax = max(max(abs(v) for v in blk), F32_1EM4)
        sfb = pow2_byte(f32(amax / 448.0))
        inv = math.ldexp(1.0, 127 - sfb)
        sb.append(sfb)
        for v in blk:
            qb.append(e4m3_encode(f32(v * inv)))
    return qb, sb


def py_pack_words(scale_bytes: list) -> list:
    """Scale bytes of one row -> signed int32 words, byte j of word i = block 4i+j, pad 127."""
    padded = list(scale_bytes) + [127] * (-len(scale_bytes) % 4)
    words = []
    for i in range(0, len(padded), 4):
        words.append(struct.unpack("<i", bytes(padded[i:i + 4]))[0])
    return words
