"""Checkpoint loaders: synthetic checkpoints in each true on-disk format -> canonical MXFP4."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tmoe import checkpoints as ck
from tmoe.checkpoints import (FORMATS, ExpertWeights, detect_format, load_deepseek_v4_experts, load_experts,
                              load_gpt_oss_experts, load_hf_bf16_experts, load_router_weights,
                              write_synthetic_checkpoint)
from tmoe.formats import dequantize_mxfp4, quantize_mxfp4

E, H, I = 4, 64, 96          # I = 96: three scale blocks per row, I/32 odd
MXFP4_FORMATS = ("gpt-oss", "gpt-oss-original", "deepseek-v4")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two-layer checkpoints (sharded + index) of every format, and the floats they encode."""
    out = {}
    for fmt in FORMATS:
        d = tmp_path_factory.mktemp(fmt)
        out[fmt] = (d, write_synthetic_checkpoint(d, fmt, num_layers=2, num_experts=E, hidden=H, intermediate=I,
                                                  seed=FORMATS.index(fmt)))
    return out


def _single(tmp_path, fmt, **kw):
    """A one-layer checkpoint (model.safetensors, no index) and its file path."""
    floats = write_synthetic_checkpoint(tmp_path, fmt, num_layers=1, num_experts=E, hidden=H, intermediate=I, **kw)
    return os.path.join(tmp_path, "model.safetensors"), floats


def _rewrite(file, mutate):
    tensors = load_file(file)
    mutate(tensors)
    save_file(tensors, file)


# ----------------------------------------------------------------------------- published decoders
_FP4_VALUES = [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _openai_mxfp4_decode(blocks, scales):
    """openai/gpt-oss gpt_oss/torch/weights.py Checkpoint._get_mxfp4_tensor, in fp32."""
    scales = scales.to(torch.int32) - 127
    assert blocks.shape[:-1] == scales.shape
    lut = torch.tensor(_FP4_VALUES, dtype=torch.float32)
    *prefix, g, b = blocks.shape
    blk = blocks.reshape(-1, b)
    out = torch.empty(blk.shape[0], b * 2)
    out[:, 0::2] = lut[(blk & 0x0F).long()]
    out[:, 1::2] = lut[(blk >> 4).long()]
    out = torch.ldexp(out, scales.reshape(-1, 1))
    return out.reshape(*prefix, g * b * 2)


def _raw(path, key):
    with safe_open(ck._Checkpoint(path)._file(key), framework="pt") as f:
        return f.get_tensor(key)


# ----------------------------------------------------------------------------- on-disk formats
@pytest.mark.parametrize("fmt", ["gpt-oss", "gpt-oss-original"])
def test_gpt_oss_on_disk_format_matches_openai_decoder(ckpts, fmt):
    """The writer's bytes decode, with openai's own decoder, to the floats it reports, gate/up interleaved."""
    path, floats = ckpts[fmt]
    for layer in range(2):
        if fmt == "gpt-oss":
            pre = f"model.layers.{layer}.mlp.experts."
            names = ("gate_up_proj_blocks", "gate_up_proj_scales", "gate_up_proj_bias",
                     "down_proj_blocks", "down_proj_scales", "down_proj_bias")
        else:
            pre = f"block.{layer}.mlp."
            names = ("mlp1_weight.blocks", "mlp1_weight.scales", "mlp1_bias",
                     "mlp2_weight.blocks", "mlp2_weight.scales", "mlp2_bias")
        b1, s1, bias1, b2, s2, bias2 = (_raw(path, pre + n) for n in names)
        assert b1.dtype == torch.uint8 and tuple(b1.shape) == (E, 2 * I, H // 32, 16)
        assert s1.dtype == torch.uint8 and tuple(s1.shape) == (E, 2 * I, H // 32)
        assert bias1.dtype == torch.bfloat16 and tuple(bias1.shape) == (E, 2 * I)
        assert tuple(b2.shape) == (E, H, I // 32, 16) and tuple(s2.shape) == (E, H, I // 32)
        assert tuple(bias2.shape) == (E, H)
        mlp1 = _openai_mxfp4_decode(b1, s1)                     # [E, 2I, H], interleaved rows
        f = floats[layer]
        assert torch.equal(mlp1[:, 0::2], f.w1[:, :I])          # even rows = gate
        assert torch.equal(mlp1[:, 1::2], f.w1[:, I:])          # odd rows = up
        assert torch.equal(_openai_mxfp4_decode(b2, s2), f.w2)
        assert torch.equal(bias1.float()[:, 0::2], f.b1[:, :I]) and torch.equal(bias1.float()[:, 1::2], f.b1[:, I:])
        assert torch.equal(bias2.float(), f.b2)


def test_deepseek_v4_on_disk_format(ckpts):
    path, floats = ckpts["deepseek-v4"]
    for layer in range(2):
        f = floats[layer]
        for x in range(E):
            for proj, ref in (("w1", f.w1[x, :I]), ("w3", f.w1[x, I:]), ("w2", f.w2[x])):
                base = f"layers.{layer}.ffn.experts.{x}.{proj}"
                w, s = _raw(path, base + ".weight"), _raw(path, base + ".scale")
                assert w.dtype == torch.int8 and tuple(w.shape) == (ref.shape[0], ref.shape[1] // 2)
                assert s.dtype == torch.float8_e8m0fnu and tuple(s.shape) == (ref.shape[0], ref.shape[1] // 32)
                # low nibble = even element, scale = 2^(byte - 127): same decoder as gpt-oss
                dec = _openai_mxfp4_decode(w.view(torch.uint8).reshape(w.shape[0], -1, 16), s.view(torch.uint8))
                assert torch.equal(dec, ref)
                assert torch.equal(s.float(), torch.ldexp(torch.ones(s.shape), s.view(torch.uint8).int() - 127))


def test_hf_bf16_on_disk_format(ckpts):
    path, floats = ckpts["hf-bf16"]
    f = floats[1]
    for x in range(E):
        pre = f"model.layers.1.mlp.experts.{x}."
        g, u, d = (_raw(path, pre + p + ".weight") for p in ("gate_proj", "up_proj", "down_proj"))
        assert g.dtype == u.dtype == d.dtype == torch.bfloat16
        assert torch.equal(g.float(), f.w1[x, :I]) and torch.equal(u.float(), f.w1[x, I:])
        assert torch.equal(d.float(), f.w2[x])


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_to_canonical(ckpts, fmt, device):
    path, floats = ckpts[fmt]
    assert detect_format(path, 1) == fmt
    for layer in range(2):
        w = load_experts(path, layer, device=device)
        assert isinstance(w, ExpertWeights)
        assert w.w1.device.type == device.type
        w = w.to("cpu")
        assert (w.w1.dtype, w.w1_sf.dtype, w.w2.dtype, w.w2_sf.dtype) == (torch.int8, torch.uint8, torch.int8,
                                                                        torch.uint8)
        assert tuple(w.w1.shape) == (E, 2 * I, H // 2) and tuple(w.w1_sf.shape) == (E, 2 * I, H // 32)
        assert tuple(w.w2.shape) == (E, H, I // 2) and tuple(w.w2_sf.shape) == (E, H, I // 32)
        assert (w.num_experts, w.expert_offset, w.num_local_experts, w.hidden, w.intermediate) == (E, 0, E, H, I)
        assert all(t.is_contiguous() for t in (w.w1, w.w1_sf, w.w2, w.w2_sf))
        f = floats[layer]
        if fmt == "hf-bf16":
            c1, s1 = quantize_mxfp4(f.w1)
            c2, s2 = quantize_mxfp4(f.w2)
            assert torch.equal(w.w1, c1) and torch.equal(w.w1_sf, s1)
            assert torch.equal(w.w2, c2) and torch.equal(w.w2_sf, s2)
            assert w.b1 is None and w.b2 is None
            continue
        # value-exact ...
        assert torch.equal(dequantize_mxfp4(w.w1, w.w1_sf), f.w1)
        assert torch.equal(dequantize_mxfp4(w.w2, w.w2_sf), f.w2)
        # ... and byte-exact against the on-disk bytes (pure relayout, nothing re-quantized)
        if fmt == "deepseek-v4":
            pre = f"layers.{layer}.ffn.experts"
            raw = lambda x, p, s: _raw(path, f"{pre}.{x}.{p}.{s}").view(torch.uint8)
            for x in range(E):
                assert torch.equal(w.w1[x].view(torch.uint8), torch.cat([raw(x, "w1", "weight"), raw(x, "w3", "weight")]))
                assert torch.equal(w.w1_sf[x], torch.cat([raw(x, "w1", "scale"), raw(x, "w3", "scale")]))
                assert torch.equal(w.w2[x].view(torch.uint8), raw(x, "w2", "weight"))
                assert torch.equal(w.w2_sf[x], raw(x, "w2", "scale"))
            assert w.b1 is None and w.b2 is None
        else:
            keys = (("model.layers.%d.mlp.experts.gate_up_proj_blocks", "model.layers.%d.mlp.experts.down_proj_blocks")
                    if fmt == "gpt-oss" else ("block.%d.mlp.mlp1_weight.blocks", "block.%d.mlp.mlp2_weight.blocks"))
            blocks1 = _raw(path, keys[0] % layer).reshape(E, 2 * I, H // 2)
            blocks2 = _raw(path, keys[1] % layer).reshape(E, H, I // 2)
            assert torch.equal(w.w1.view(torch.uint8), torch.cat([blocks1[:, 0::2], blocks1[:, 1::2]], dim=1))
            assert torch.equal(w.w2.view(torch.uint8), blocks2)
            assert w.b1.dtype == w.b2.dtype == torch.float32
            assert torch.equal(w.b1, f.b1) and torch.equal(w.b2, f.b2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("num_ranks", [2, 4])
def test_rank_slicing(ckpts, fmt, num_ranks):
    path, _ = ckpts[fmt]
    full = load_experts(path, 1, fmt)
    parts = [load_experts(path, 1, fmt, rank=r, num_ranks=num_ranks) for r in range(num_ranks)]
    el = E // num_ranks
    for r, p in enumerate(parts):
        assert (p.num_experts, p.expert_offset, p.num_local_experts) == (E, r * el, el)
    for name in ("w1", "w1_sf", "w2", "w2_sf", "b1", "b2"):
        if getattr(full, name) is None:
            assert all(getattr(p, name) is None for p in parts)
        else:
            assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(full, name))


def test_loader_reads_only_the_layer_and_the_ranks_experts(ckpts, monkeypatch):
    reads = []
    orig = ck._Checkpoint.get

    def spy(self, key, start=None, stop=None):
        reads.append((key, start, stop))
        return orig(self, key, start, stop)

    monkeypatch.setattr(ck._Checkpoint, "get", spy)
    load_experts(ckpts["gpt-oss"][0], 1, rank=1, num_ranks=2)
    assert len(reads) == 6 and all(k.startswith("model.layers.1.") and (s, e) == (2, 4) for k, s, e in reads)
    for fmt, pre in (("deepseek-v4", "layers.0.ffn.experts."), ("hf-bf16", "model.layers.0.mlp.experts.")):
        reads.clear()
        load_experts(ckpts[fmt][0], 0, rank=1, num_ranks=2)
        assert len(reads) == (12 if fmt == "deepseek-v4" else 6)
        assert all(k.startswith(pre + "2.") or k.startswith(pre + "3.") for k, _, _ in reads)


def test_checkpoint_without_index_and_single_file(tmp_path, ckpts):
    path, floats = ckpts["deepseek-v4"]
    d = tmp_path / "noindex"
    d.mkdir()
    for n in os.listdir(path):
        if n.endswith(".safetensors"):
            (d / n).write_bytes((path / n).read_bytes())
    w = load_experts(d, 1)
    assert torch.equal(dequantize_mxfp4(w.w1, w.w1_sf), floats[1].w1)
    file, fl = _single(tmp_path / "one", "gpt-oss", seed=3)
    w = load_experts(file, 0)
    assert torch.equal(dequantize_mxfp4(w.w2, w.w2_sf), fl[0].w2)


def test_explicit_loaders_and_router(ckpts):
    p = ckpts["gpt-oss-original"][0]
    a = load_gpt_oss_experts(p, 0)
    b = load_gpt_oss_experts(p, 0, naming="gpt-oss-original")
    assert torch.equal(a.w1, b.w1)
    assert torch.equal(load_deepseek_v4_experts(ckpts["deepseek-v4"][0], 0, num_experts=E).w2,
                       load_experts(ckpts["deepseek-v4"][0], 0).w2)
    assert torch.equal(load_hf_bf16_experts(ckpts["hf-bf16"][0], 0).w1, load_experts(ckpts["hf-bf16"][0], 0).w1)
    r = load_hf_bf16_experts(ckpts["hf-bf16"][0], 0, rounding="rtne")
    assert r.w1.shape == (E, 2 * I, H // 2)
    for fmt in FORMATS:
        w, b = load_router_weights(ckpts[fmt][0], 1)
        assert w.dtype == torch.float32 and tuple(w.shape) == (E, H)
        assert b is not None and b.dtype == torch.float32 and tuple(b.shape) == (E,)


def test_mixtral_naming(tmp_path):
    gen = torch.Generator().manual_seed(0)
    t = {}
    ref1, ref2 = [], []
    for x in range(2):
        w1, w3, w2 = (torch.randn(s, generator=gen).to(torch.bfloat16) for s in ((I, H), (I, H), (H, I)))
        t.update({f"model.layers.0.block_sparse_moe.experts.{x}.w1.weight": w1,
                  f"model.layers.0.block_sparse_moe.experts.{x}.w3.weight": w3,
                  f"model.layers.0.block_sparse_moe.experts.{x}.w2.weight": w2})
        ref1.append(torch.cat([w1, w3]))
        ref2.append(w2)
    save_file(t, tmp_path / "model.safetensors")
    w = load_experts(tmp_path, 0)
    assert detect_format(tmp_path) == "hf-bf16"
    c1, s1 = quantize_mxfp4(torch.stack(ref1))
    assert torch.equal(w.w1, c1) and torch.equal(w.w1_sf, s1)
    assert torch.equal(w.w2, quantize_mxfp4(torch.stack(ref2))[0])


# ----------------------------------------------------------------------------- error paths
GPT = "model.layers.0.mlp.experts."
ORIG = "block.0.mlp."
V4 = "layers.0.ffn.experts."
HF = "model.layers.0.mlp.experts."


def _drop(key):
    return lambda t: t.pop(key)


def _set(key, value_fn):
    def m(t):
        t[key] = value_fn(t[key])
    return m


def _poke_255(key):
    def m(t):
        v = t[key].clone()
        u = v.view(torch.uint8).reshape(-1)
        u[3] = 255
        t[key] = v
    return m


def _poke_nan(key):
    def m(t):
        v = t[key].clone()
        v.reshape(-1)[5] = float("nan")
        t[key] = v
    return m


ERRORS = [
    # gpt-oss (HF naming)
    ("gpt-oss", _drop(GPT + "down_proj_scales"), GPT + "down_proj_scales"),
    ("gpt-oss", _drop(GPT + "gate_up_proj_bias"), GPT + "gate_up_proj_bias"),
    ("gpt-oss", _drop(GPT + "gate_up_proj_blocks"), GPT + "gate_up_proj_blocks"),
    ("gpt-oss", _set(GPT + "gate_up_proj_blocks", lambda v: v[:, :, :, :8].contiguous()), GPT + "gate_up_proj_blocks"),
    ("gpt-oss", _set(GPT + "gate_up_proj_blocks", lambda v: v[:, :-1].contiguous()), GPT + "gate_up_proj_blocks"),
    ("gpt-oss", _set(GPT + "gate_up_proj_blocks", lambda v: v.to(torch.bfloat16)), GPT + "gate_up_proj_blocks"),
    ("gpt-oss", _set(GPT + "down_proj_blocks", lambda v: v[:, :-1].contiguous()), GPT + "down_proj_blocks"),
    ("gpt-oss", _set(GPT + "gate_up_proj_scales", lambda v: v.float()), GPT + "gate_up_proj_scales"),
    ("gpt-oss", _set(GPT + "down_proj_scales", lambda v: v[:1].contiguous()), GPT + "down_proj_scales"),
    ("gpt-oss", _set(GPT + "down_proj_bias", lambda v: v.to(torch.int32)), GPT + "down_proj_bias"),
    ("gpt-oss", _set(GPT + "gate_up_proj_bias", lambda v: v[:, :8].contiguous()), GPT + "gate_up_proj_bias"),
    ("gpt-oss", _poke_255(GPT + "gate_up_proj_scales"), GPT + "gate_up_proj_scales"),
    ("gpt-oss", _poke_255(GPT + "down_proj_scales"), GPT + "down_proj_scales"),
    ("gpt-oss", _poke_nan(GPT + "down_proj_bias"), GPT + "down_proj_bias"),
    ("gpt-oss", _poke_nan(GPT + "gate_up_proj_bias"), GPT + "gate_up_proj_bias"),
    # gpt-oss (openai naming)
    ("gpt-oss-original", _drop(ORIG + "mlp2_weight.blocks"), ORIG + "mlp2_weight.blocks"),
    ("gpt-oss-original", _poke_255(ORIG + "mlp1_weight.scales"), ORIG + "mlp1_weight.scales"),
    ("gpt-oss-original", _set(ORIG + "mlp1_bias", lambda v: v[1:].contiguous()), ORIG + "mlp1_bias"),
    # DeepSeek-V4
    ("deepseek-v4", _drop(V4 + "2.w3.scale"), V4 + "2.w3.scale"),
    ("deepseek-v4", _drop(V4 + "1.w2.weight"), V4 + "1.w2.weight"),
    ("deepseek-v4", _drop(V4 + "0.w1.weight"), "layers.0.ffn.experts.0.w1.weight"),
    ("deepseek-v4", _set(V4 + "3.w2.weight", lambda v: v[:, :-1].contiguous()), V4 + "3.w2.weight"),
    ("deepseek-v4", _set(V4 + "1.w1.scale", lambda v: v.view(torch.uint8)[:-1].contiguous()), V4 + "1.w1.scale"),
    ("deepseek-v4", _set(V4 + "0.w3.weight", lambda v: v.float()), V4 + "0.w3.weight"),
    ("deepseek-v4", _set(V4 + "2.w1.scale", lambda v: v.view(torch.uint8).float()), V4 + "2.w1.scale"),
    ("deepseek-v4", _poke_255(V4 + "3.w3.scale"), V4 + "3.w3.scale"),
    ("deepseek-v4", _poke_255(V4 + "0.w2.scale"), V4 + "0.w2.scale"),
    # HF bf16
    ("hf-bf16", _drop(HF + "3.down_proj.weight"), HF + "3.down_proj.weight"),
    ("hf-bf16", _drop(HF + "1.up_proj.weight"), HF + "1.up_proj.weight"),
    ("hf-bf16", _set(HF + "2.up_proj.weight", lambda v: v[:-1].contiguous()), HF + "2.up_proj.weight"),
    ("hf-bf16", _set(HF + "0.down_proj.weight", lambda v: v.to(torch.int8)), HF + "0.down_proj.weight"),
    ("hf-bf16", _set(HF + "0.gate_proj.weight", lambda v: v[:, :40].contiguous()), HF + "0.gate_proj.weight"),
    ("hf-bf16", _poke_nan(HF + "1.gate_proj.weight"), HF + "1.gate_proj.weight"),
    ("hf-bf16", _set(HF + "2.down_proj.weight", lambda v: v.clone().fill_(float("inf"))), HF + "2.down_proj.weight"),
]


@pytest.mark.parametrize("fmt, mutate, key", ERRORS,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(ERRORS)])
def test_errors_name_the_tensor(tmp_path, fmt, mutate, key):
    file, _ = _single(tmp_path, fmt)
    _rewrite(file, mutate)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_experts(tmp_path, 0, fmt)


def test_error_missing_key_listed_in_index(ckpts, tmp_path):
    path, _ = ckpts["gpt-oss"]
    d = tmp_path / "broken"
    d.mkdir()
    for n in os.listdir(path):
        (d / n).write_bytes((path / n).read_bytes())
    index = json.loads((d / "model.safetensors.index.json").read_text())
    _rewrite(str(d / index["weight_map"][GPT + "down_proj_bias"]), _drop(GPT + "down_proj_bias"))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.experts\.down_proj_bias"):
        load_experts(d, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_argument_errors(ckpts, fmt):
    path, _ = ckpts[fmt]
    with pytest.raises(ValueError, match="num_ranks=3"):
        load_experts(path, 0, fmt, num_ranks=3)
    with pytest.raises(ValueError, match="rank must be"):
        load_experts(path, 0, fmt, rank=2, num_ranks=2)
    with pytest.raises(ValueError, match="rank must be"):
        load_experts(path, 0, fmt, rank=-1, num_ranks=2)
    with pytest.raises(ValueError, match="num_ranks must be"):
        load_experts(path, 0, fmt, num_ranks=0)
    with pytest.raises(ValueError, match="layer 7"):
        load_experts(path, 7, fmt)
    with pytest.raises(ValueError, match="layer must be"):
        load_experts(path, -1, fmt)


def test_misc_errors(ckpts, tmp_path):
    with pytest.raises(ValueError, match="'gguf'"):
        load_experts(ckpts["gpt-oss"][0], 0, "gguf")
    with pytest.raises(ValueError, match="does not exist"):
        load_experts(tmp_path / "nope", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .safetensors"):
        load_experts(tmp_path / "empty", 0)
    with pytest.raises(ValueError, match="layer 5"):
        detect_format(ckpts["hf-bf16"][0], 5)
    with pytest.raises(ValueError, match="naming"):
        load_gpt_oss_experts(ckpts["gpt-oss"][0], 0, naming="hf")
    with pytest.raises(ValueError, match="num_experts"):
        load_deepseek_v4_experts(ckpts["deepseek-v4"][0], 0, num_experts=0)
    with pytest.raises(ValueError, match=r"layers\.0\.ffn\.experts\.4\.w1\.weight"):
        load_deepseek_v4_experts(ckpts["deepseek-v4"][0], 0, num_experts=E + 1)
    with pytest.raises(ValueError, match="format must be"):
        write_synthetic_checkpoint(tmp_path / "w", "gguf")
    with pytest.raises(ValueError, match="hidden"):
        write_synthetic_checkpoint(tmp_path / "w", "hf-bf16", hidden=48)
