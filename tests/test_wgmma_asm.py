"""The Gluon kernels' inline PTX (kernels/wgmma_gemm.py), executed on CPU by a small PTX interpreter
(ptx_subset.py): the FP4 decode is exact against tmoe.formats for every code byte and scale, and the
quad exchange hands each lane the bytes of its wgmma A fragment. The GPU tests (test_gluon_gemm.py)
check the compiled kernels end to end; these catch an edited asm block in CI."""
import numpy as np
import pytest
import torch

import ptx_subset
from tmoe import formats
from tmoe.kernels import weight_layout, wgmma_gemm

U32 = np.uint32


def _expected_pairs(words: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[n, 4] uint32: byte i of each word -> (bf16 of its low nibble, of its high nibble) x 2^(s-127)."""
    codes = torch.from_numpy(words.view(np.uint8).reshape(-1, 4).copy())            # little endian: byte i
    vals = formats.e2m1_to_float(torch.stack([codes & 0xF, codes >> 4], -1)).double()   # [n, 4, 2]
    sf = torch.from_numpy(scales.astype(np.int64)).double()
    vals = vals * torch.exp2(sf - 127)[:, None, None]
    bits = vals.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16).astype(U32)
    return bits[..., 0] | (bits[..., 1] << U32(16))


def _word_bits(words: np.ndarray, bits: str) -> np.ndarray:
    """Canonical code words -> the same codes laid out as weight_layout.WORD_BITS[bits] (via a 64-byte block)."""
    tiled = torch.from_numpy(np.tile(words.view(np.uint8).reshape(-1, 4), (1, 16)))
    return weight_layout._permute_word_bits(tiled, bits, True).numpy()[:, :4].copy().view(U32)[:, 0]


@pytest.mark.parametrize("bits,scale_range", [("canonical", (1, 255)), ("canonical", (0, 1)), ("signed", (1, 255)),
                                              ("signed", (0, 1)), ("arith", (0, 129))])
def test_fp4_pairs_asm_is_exact(bits, scale_range):
    """Each decoder (canonical words, "signed" and "arith" quad words) against tmoe.formats for every code
    byte at every position and every scale it accepts ("arith": s <= 128, with its own scale pair)."""
    rng = np.random.default_rng(0)
    every_byte = np.arange(256, dtype=U32)
    words = np.concatenate([every_byte * U32(0x01010101), every_byte | (every_byte[::-1] << U32(8)) |
                            (every_byte << U32(16)) | (every_byte[::-1] << U32(24)),
                            rng.integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(U32)])
    lo, hi = scale_range
    scales = np.repeat(np.arange(lo, hi, dtype=U32), 1 + len(words) // (hi - lo))[: len(words)]
    rng.shuffle(scales)
    scale_asm = wgmma_gemm._SCALE_BYTE_ARITH_ASM if bits == "arith" else wgmma_gemm._SCALE_BYTE_ASM
    pairs = ptx_subset.run(scale_asm.value, {1: scales})[0]
    th0, tl0 = wgmma_gemm.FP4_LUT_WORDS
    ins = words if bits == "canonical" else _word_bits(words, bits)
    if bits == "arith":     # two words per call, each with its own scale pair: (w, s) and (w, s) shifted by one
        out = ptx_subset.run(wgmma_gemm._FP4_PAIRS_ARITH_ASM.value,
                             {8: ins, 16: np.roll(ins, 1), 24: pairs, 32: np.roll(pairs, 1)})
        got = np.concatenate([np.stack([out[i] for i in range(4)], -1), np.stack([out[i] for i in range(4, 8)], -1)])
        want = np.concatenate([_expected_pairs(words, scales), _expected_pairs(np.roll(words, 1), np.roll(scales, 1))])
        words, scales = np.concatenate([words, np.roll(words, 1)]), np.concatenate([scales, np.roll(scales, 1)])
    else:
        asm = {"canonical": wgmma_gemm._FP4_PAIRS_ASM, "signed": wgmma_gemm._FP4_PAIRS_SIGNED_ASM}[bits]
        out = ptx_subset.run(asm.value, {4: ins, 12: pairs, 20: np.full_like(words, th0),
                                         28: np.full_like(words, tl0 & 0xFFFFFFFF)})
        got = np.stack([out[i] for i in range(4)], -1)
        want = _expected_pairs(words, scales)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"word {words[bad[0][0]]:#010x} scale {scales[bad[0][0]]} byte {bad[0][1]}: " \
                          f"{got[tuple(bad[0])]:#010x} != {want[tuple(bad[0])]:#010x}"


def test_arith_scale_pairs():
    """2^(s-1) for every s <= 128 (s = 0: 2^-1): from a byte in both halves, and from a scale word with the selectors
    of _scale_pairs(ARITH): groups 2j and 2j + 1 in the low and the high half."""
    every = np.arange(129, dtype=U32)
    want = np.array([int(torch.tensor(2.0 ** (s - 1), dtype=torch.bfloat16).view(torch.int16)) & 0xFFFF
                     for s in range(129)], dtype=U32) * U32(0x10001)
    np.testing.assert_array_equal(ptx_subset.run(wgmma_gemm._SCALE_BYTE_ARITH_ASM.value, {1: every})[0], want)
    rng = np.random.default_rng(4)
    for j in range(2):      # the selectors of _scale_pairs(ARITH): groups 2j, 2j + 1 in the low / high half
        lo, hi = rng.permutation(129).astype(U32), every
        words = (lo << U32(16 * j)) | (hi << U32(16 * j + 8)) | U32(0x55550000 >> (16 * j))
        sel = np.full_like(words, j * 0x0202 + 0x4140)
        got = ptx_subset.run(wgmma_gemm._SCALE_WORD_ARITH_ASM.value, {1: words, 2: sel})[0]
        np.testing.assert_array_equal(got & U32(0xFFFF), want[lo] & U32(0xFFFF), err_msg=f"group {2 * j}")
        np.testing.assert_array_equal(got >> U32(16), want[hi] >> U32(16), err_msg=f"group {2 * j + 1}")


def test_scale_word_asm_equals_byte_asm():
    """_SCALE_WORD_ASM with the selector of group r (as wgmma_gemm._scale_pairs builds it) = _SCALE_BYTE_ASM of
    byte r of the scale word, for every scale byte (incl. 0 -> the subnormal 2^-127) at every position."""
    rng = np.random.default_rng(2)
    every = np.arange(256, dtype=U32)
    for r in range(4):
        words = rng.integers(0, 2 ** 32, 256, dtype=np.uint64).astype(U32)
        words = (words & ~U32(0xFF << (8 * r))) | (every << U32(8 * r))
        sel = np.full_like(words, r * 0x0101 + 0x4040)
        got = ptx_subset.run(wgmma_gemm._SCALE_WORD_ASM.value, {1: words, 2: sel})[0]
        want = ptx_subset.run(wgmma_gemm._SCALE_BYTE_ASM.value, {1: every})[0]
        np.testing.assert_array_equal(got, want, err_msg=f"group {r}")
    np.testing.assert_array_equal(want[[0, 1, 127, 254]], [0x00400040, 0x00800080, 0x3F803F80, 0x7F007F00])


def test_triton_decoder_asm_is_exact():
    """numerics._FP4_TO_BF16_ASM (the Triton kernels' decoder, sharing the lookup tables): 4 code bytes
    + the bf16 scale bits of bytes (0, 1) and (2, 3) -> the values of the low nibbles, then of the high."""
    from tmoe.kernels import numerics
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(U32)
    s01, s23 = rng.integers(1, 255, 4096).astype(U32), rng.integers(1, 255, 4096).astype(U32)
    pair = lambda s: (s << U32(7)) | (s << U32(23))                    # noqa: E731 - bf16 bits of 2^(s-127), twice
    out = ptx_subset.run(numerics._FP4_TO_BF16_ASM.value, {4: words, 5: pair(s01), 6: pair(s23)})
    want01 = _expected_pairs(words, s01)                              # (lo, hi) of each byte, scale s01
    want23 = _expected_pairs(words, s23)
    lo = lambda p: p & U32(0xFFFF)                                     # noqa: E731
    hi = lambda p: p >> U32(16)                                        # noqa: E731
    np.testing.assert_array_equal(out[0], lo(want01[:, 0]) | (lo(want01[:, 1]) << U32(16)))
    np.testing.assert_array_equal(out[1], lo(want23[:, 2]) | (lo(want23[:, 3]) << U32(16)))
    np.testing.assert_array_equal(out[2], hi(want01[:, 0]) | (hi(want01[:, 1]) << U32(16)))
    np.testing.assert_array_equal(out[3], hi(want23[:, 2]) | (hi(want23[:, 3]) << U32(16)))


def test_quad_exchange_asm_delivers_each_lanes_bytes():
    rng = np.random.default_rng(1)
    chunk = rng.integers(0, 256, (8, 64), dtype=np.uint8)      # the 64 code bytes of a row, one row per quad
    lane = np.arange(32)
    g, t = lane // 4, lane % 4
    loaded = chunk[g].reshape(32, 4, 4, 4)[lane, t].copy().view(np.uint32).reshape(32, 4)   # 16 bytes at 16t
    ops = {4 + r: loaded[:, r] for r in range(4)}
    for r in range(4):
        p = (t ^ r).astype(U32)                                # partner lane in round r, as in _exchange
        ops[8 + r] = (p + U32(4)) * U32(16) + p
    out = ptx_subset.run(wgmma_gemm._QUAD_EXCHANGE_ASM.value, ops)
    for k in range(4):                                        # output k: bytes j = 16k + t + 4q, q = 0..3
        want = chunk[g[:, None], 16 * k + t[:, None] + 4 * np.arange(4)[None, :]].copy().view(np.uint32)[:, 0]
        np.testing.assert_array_equal(out[k], want, err_msg=f"group {k}")


def test_ptx_subset_rejects_unknown_instructions():
    with pytest.raises(NotImplementedError, match="add.u32"):
        ptx_subset.run("add.u32 $0, $1, $1;", {1: np.zeros(32, dtype=U32)})


def test_lookup_words_come_from_registers():
    """_FP4_PAIRS_ASM takes th0 / tl0 as operands $20 / $28 (not numerics' immediates, which ptxas would copy
    from a uniform register before every lookup), and fp4_lut holds exactly numerics' words."""
    import re
    from tmoe.kernels import numerics
    asm = wgmma_gemm._FP4_PAIRS_ASM.value
    assert "mov.b32 th0, $20;" in asm and "mov.b32 tl0, $28;" in asm
    imm = dict(re.findall(r"mov\.b32 (th0|tl0), (0x[0-9A-Fa-f]+);", numerics.FP4_MAGNITUDE_LOOKUP_PTX))
    th0, tl0 = wgmma_gemm.FP4_LUT_WORDS
    assert (th0 & 0xFFFFFFFF, tl0 & 0xFFFFFFFF) == (int(imm["th0"], 16), int(imm["tl0"], 16))
    lut = wgmma_gemm.fp4_lut(torch.device("cpu"))
    assert lut.tolist() == [th0] * 8 + [tl0] * 8 and wgmma_gemm.fp4_lut(torch.device("cpu")) is lut
