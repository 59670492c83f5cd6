"""Router kernel (tmoe.router.route) vs the torch reference (route_reference), and the reference vs
the published formulas of DeepSeek-V3 / V4, gpt-oss and Mixtral/Qwen."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from tmoe.router import SCORINGS, route, route_reference

BIAS_SCORINGS = ("sigmoid_noaux", "sqrtsoftplus")


# ----------------------------------------------------------------------------- helpers
def _keys(logits, scoring, bias):
    """Reference selection keys (float32) without group masking; unavailable experts -inf."""
    x = logits.float().cpu()
    avail = ~torch.isnan(x) & (x != float("-inf"))
    x = torch.where(avail, x, torch.zeros_like(x)).clamp(max=torch.finfo(torch.float32).max)
    if scoring == "sigmoid_noaux":
        x = torch.sigmoid(x)
    elif scoring == "sqrtsoftplus":
        x = torch.nn.functional.softplus(x).sqrt()
    if bias is not None:
        x = x + bias.float().cpu()
    return torch.where(avail, x, torch.full_like(x, float("-inf")))


def _check(logits, top_k, scoring, bias=None, num_groups=None, topk_groups=None, renormalize=True, scaling=1.0,
           device="cpu"):
    """route on `device` == route_reference: indices exactly; weights to fp32 rounding. A row may
    differ only where two reference keys are within float32 noise of each other (GPU exp/log ulps)."""
    dl = logits.to(device)
    db = bias.to(device) if bias is not None else None
    idx, w = route(dl, top_k, scoring, bias=db, num_groups=num_groups, topk_groups=topk_groups,
                   renormalize=renormalize, scaling=scaling)
    ridx, rw = route_reference(logits, top_k, scoring, bias=bias, num_groups=num_groups, topk_groups=topk_groups,
                               renormalize=renormalize, scaling=scaling)
    idx, w = idx.cpu(), w.cpu()
    assert idx.dtype == torch.int64 and w.dtype == torch.float32
    assert idx.shape == w.shape == (logits.shape[0], top_k)
    assert not torch.isnan(w).any()
    same = (idx == ridx).all(dim=1)
    if not bool(same.all()):
        keys = _keys(logits, scoring, bias)
        for r in torch.nonzero(~same).flatten().tolist():
            got = keys[r, idx[r].clamp(min=0)].where(idx[r] >= 0, torch.tensor(float("-inf")))
            exp = keys[r, ridx[r].clamp(min=0)].where(ridx[r] >= 0, torch.tensor(float("-inf")))
            assert torch.allclose(got.sort().values, exp.sort().values, rtol=0, atol=2e-6), (
                f"row {r}: kernel {idx[r].tolist()} vs reference {ridx[r].tolist()}")
        assert int((~same).sum()) <= max(1, logits.shape[0] // 20)
    torch.testing.assert_close(w[same], rw[same], rtol=2e-5, atol=1e-6 * max(1.0, abs(scaling)))
    return idx, w, ridx, rw


def _grid_logits(gen, t, e, step=0.125, span=48):
    """Logits on a coarse grid: many exact ties, distinct values far apart."""
    return torch.randint(-span, span + 1, (t, e), generator=gen).float() * step


def _grid_bias(gen, e):
    return torch.randint(-2, 3, (e,), generator=gen).float() * 0.25


# ----------------------------------------------------------------------------- kernel vs reference
CASES = [  # (T, E, K, num_groups, topk_groups)
    (5, 8, 2, None, None),
    (13, 64, 8, None, None),
    (6, 160, 6, None, None),
    (4, 512, 32, None, None),
    (9, 256, 8, 8, 4),
    (5, 384, 6, 8, 4),
    (4, 512, 32, 16, 8),
    (6, 12, 5, 12, 7),          # one expert per group
]


@pytest.mark.parametrize("scoring, case", [(s, c) for c in CASES for s in SCORINGS if c[3] is None or s in BIAS_SCORINGS],
                         ids=lambda v: v if isinstance(v, str) else "T%d-E%d-K%d-G%s" % (v[0], v[1], v[2], v[3]))
def test_kernel_matches_reference(device, scoring, case):
    t, e, k, ng, tg = case
    gen = torch.Generator().manual_seed(1000 * e + k)
    logits = _grid_logits(gen, t, e)
    bias = _grid_bias(gen, e) if scoring in BIAS_SCORINGS else None
    _check(logits, k, scoring, bias, ng, tg, renormalize=True, scaling=2.5, device=device)
    _check(torch.randn(t, e, generator=gen) * 3, k, scoring, bias, ng, tg, renormalize=False, device=device)


@pytest.mark.parametrize("scoring", SCORINGS)
def test_bf16_and_strided_logits(device, scoring):
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(24, 2 * 64, generator=gen)
    logits = base[::3, ::2]                            # non-contiguous [8, 64]
    bias = torch.randn(64, generator=gen) * 0.1 if scoring in BIAS_SCORINGS else None
    _check(logits, 6, scoring, bias, device=device)
    _check(logits.to(torch.bfloat16), 6, scoring, bias, device=device)
    _check(logits.t().contiguous().t().to(torch.float16), 6, scoring, bias, device=device)


def test_empty_tokens(device):
    idx, w = route(torch.empty(0, 16, device=device), 4, "softmax_topk")
    assert idx.shape == (0, 4) and w.shape == (0, 4)
    assert idx.dtype == torch.int64 and w.dtype == torch.float32


@pytest.mark.parametrize("scoring", SCORINGS)
def test_each_token_independent(device, scoring):
    """A token's route does not depend on the other tokens or on how many there are."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(37, 96, generator=gen)
    bias = torch.randn(96, generator=gen) * 0.1 if scoring in BIAS_SCORINGS else None
    db = bias.to(device) if bias is not None else None
    idx, w = route(logits.to(device), 8, scoring, bias=db)
    for r in (0, 17, 36):
        i1, w1 = route(logits[r:r + 1].to(device), 8, scoring, bias=db)
        assert torch.equal(i1.cpu(), idx[r:r + 1].cpu()) and torch.equal(w1.cpu(), w[r:r + 1].cpu())


# ----------------------------------------------------------------------------- ties and order
@pytest.mark.parametrize("scoring", SCORINGS)
def test_ties_lower_expert_id_wins(device, scoring):
    e, k = 40, 7
    logits = torch.zeros(3, e)
    logits[1, 5:] = 1.0                                # experts 5..39 tie at the top
    logits[2, ::2] = -1.0                              # odd experts tie at the top
    bias = torch.zeros(e) if scoring in BIAS_SCORINGS else None
    idx, w, _, _ = _check(logits, k, scoring, bias, device=device)
    assert idx[0].tolist() == list(range(k))
    assert idx[1].tolist() == list(range(5, 5 + k))
    assert idx[2].tolist() == list(range(1, 2 * k, 2))
    torch.testing.assert_close(w, torch.full((3, k), 1.0 / k))


def test_slots_descending_by_key(device):
    gen = torch.Generator().manual_seed(11)
    for scoring in SCORINGS:
        logits = _grid_logits(gen, 16, 128, step=0.5, span=6)   # heavy ties
        bias = _grid_bias(gen, 128) if scoring in BIAS_SCORINGS else None
        idx, _, _, _ = _check(logits, 16, scoring, bias, device=device)
        keys = _keys(logits, scoring, bias)
        kv = torch.gather(keys, 1, idx)
        assert (kv[:, :-1] >= kv[:, 1:]).all()
        tie = kv[:, :-1] == kv[:, 1:]
        assert (idx[:, :-1][tie] < idx[:, 1:][tie]).all()
        assert all(len(set(r)) == len(r) for r in idx.tolist())       # no expert twice


def test_bias_changes_selection_not_weights(device):
    """noaux_tc: the correction bias picks experts, the weights are the unbiased scores."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0])
    for scoring, f in (("sigmoid_noaux", torch.sigmoid),
                       ("sqrtsoftplus", lambda v: torch.nn.functional.softplus(v).sqrt())):
        idx, w, _, _ = _check(logits, 2, scoring, bias, renormalize=False, scaling=1.5, device=device)
        assert idx.tolist() == [[3, 0]]
        torch.testing.assert_close(w, 1.5 * f(logits[:, [3, 0]]))


def test_group_limited_selection(device):
    """Experts come only from the topk_groups groups with the largest top-2 sums."""
    gen = torch.Generator().manual_seed(5)
    e, ng, tg, k = 64, 8, 3, 6
    logits = torch.randn(20, e, generator=gen) * 2
    bias = torch.randn(e, generator=gen) * 0.3
    idx, _, _, _ = _check(logits, k, "sigmoid_noaux", bias, ng, tg, device=device)
    keys = _keys(logits, "sigmoid_noaux", bias).view(20, ng, e // ng)
    gscore = keys.topk(2, dim=-1).values.sum(-1)
    kept = gscore.topk(tg, dim=-1).indices
    for r in range(20):
        assert set((idx[r] // (e // ng)).tolist()) <= set(kept[r].tolist())


def test_dropped_groups_never_chosen_even_if_kept_keys_negative(device):
    """tmoe (like DeepSeek / vLLM / SGLang) masks dropped groups with -inf, not HF's 0.0."""
    logits = torch.full((1, 8), -3.0)
    bias = torch.tensor([-1.0, -1.0, -1.0, -1.0, -2.0, -2.0, -2.0, -2.0])
    idx, _, _, _ = _check(logits, 4, "sigmoid_noaux", bias, num_groups=2, topk_groups=1, device=device)
    assert idx.tolist() == [[0, 1, 2, 3]]


# ----------------------------------------------------------------------------- -inf / NaN / +inf
@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("special", ["-inf", "nan"])
def test_unavailable_logits(device, scoring, special):
    val = float(special)
    e, k = 16, 4
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, e, generator=gen)
    logits[0, :8] = val                                # plenty left: never chosen
    logits[1, :] = val
    logits[1, [3, 9]] = torch.tensor([0.5, 1.5])       # only 2 available: slots 2, 3 masked
    logits[2, :] = val                                 # none available: all masked
    logits[3, 0] = val                                 # a huge bias cannot revive it
    bias = torch.zeros(e) if scoring in BIAS_SCORINGS else None
    if bias is not None:
        bias[0] = 100.0
        bias[1] = 100.0
    idx, w, _, _ = _check(logits, k, scoring, bias, scaling=2.0, device=device)
    assert not torch.isnan(w).any()
    assert (idx[0] >= 8).all()
    assert idx[1].tolist() == [9, 3, -1, -1]
    assert w[1, 2:].tolist() == [0.0, 0.0] and (w[1, :2] > 0).all()
    assert idx[2].tolist() == [-1] * k and w[2].tolist() == [0.0] * k
    assert 0 not in idx[3].tolist()
    if bias is not None:
        assert idx[3, 0].item() == 1                   # the biased available expert wins
    torch.testing.assert_close(w[0].sum(), torch.tensor(2.0))        # renormalized x scaling


def test_unavailable_logits_grouped(device):
    logits = torch.zeros(2, 16)
    logits[0, :4] = float("nan")                       # group 0 fully unavailable
    logits[1, :] = float("-inf")
    logits[1, 5] = 1.0                                 # a single available expert in the kept groups
    bias = torch.zeros(16)
    bias[:4] = 1.0
    idx, w, _, _ = _check(logits, 4, "sqrtsoftplus", bias, num_groups=4, topk_groups=2, device=device)
    assert (idx[0] >= 4).all()
    assert idx[1].tolist() == [5, -1, -1, -1]
    torch.testing.assert_close(w[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("scoring", SCORINGS)
def test_pos_inf_logits_are_clamped(device, scoring):
    logits = torch.zeros(2, 8)
    logits[0, 6] = float("inf")
    logits[1, [2, 5]] = float("inf")
    bias = torch.zeros(8) if scoring in BIAS_SCORINGS else None
    idx, w, _, _ = _check(logits, 3, scoring, bias, device=device)
    assert idx[0, 0].item() == 6 and idx[1, :2].tolist() == [2, 5]
    assert torch.isfinite(w).all()


# ----------------------------------------------------------------------------- validation
_L = torch.zeros(4, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(logits=_L, top_k=17), "top_k=17"),
    (dict(logits=torch.zeros(2, 64), top_k=33), "top_k must be in"),
    (dict(logits=_L, top_k=0), "top_k must be in"),
    (dict(logits=_L, top_k=2.0), "top_k must be an int"),
    (dict(logits=_L, top_k=True), "top_k must be an int"),
    (dict(logits=_L, top_k=2, scoring="softmax"), "'softmax'"),
    (dict(logits=torch.zeros(2, 513), top_k=2), "513"),
    (dict(logits=torch.zeros(16), top_k=2), r"\(16,\)"),
    (dict(logits=torch.zeros(4, 16, dtype=torch.float64), top_k=2), "float64"),
    (dict(logits=torch.zeros(4, 16, dtype=torch.int32), top_k=2), "int32"),
    (dict(logits=[[0.0] * 16], top_k=2), "list"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", bias=torch.zeros(15)), r"\(15,\)"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", bias=torch.zeros(16, dtype=torch.int64)), "int64"),
    (dict(logits=_L, top_k=2, scoring="softmax_topk", bias=torch.zeros(16)), "softmax_topk"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", num_groups=4), "topk_groups=None"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", topk_groups=2), "num_groups=None"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", num_groups=5, topk_groups=2), "num_groups=5"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", num_groups=4, topk_groups=5), "topk_groups=5"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", num_groups=0, topk_groups=1), "num_groups must be"),
    (dict(logits=_L, top_k=2, scoring="sigmoid_noaux", num_groups=4, topk_groups=0), "topk_groups must be"),
    (dict(logits=_L, top_k=9, scoring="sigmoid_noaux", num_groups=4, topk_groups=2), "top_k=9"),
    (dict(logits=_L, top_k=2, scoring="topk_softmax", num_groups=4, topk_groups=2), "topk_softmax"),
    (dict(logits=_L, top_k=2, renormalize=1), "renormalize"),
    (dict(logits=_L, top_k=2, scaling=float("nan")), "scaling"),
    (dict(logits=_L, top_k=2, scaling="2"), "scaling"),
])
@pytest.mark.parametrize("fn", [route, route_reference], ids=["route", "reference"])
def test_validation_errors(kwargs, match, fn):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


# ----------------------------------------------------------------------------- the public formulas
def _deepseek_v3_gate(logits, bias, k, ng, tg, scale):
    """DeepSeek-V3 inference/model.py Gate.forward (sigmoid, bias, -inf group mask)."""
    scores = logits.sigmoid()
    original = scores
    scores = scores + bias
    t = logits.shape[0]
    s = scores.view(t, ng, -1)
    group_scores = s.topk(2, dim=-1)[0].sum(dim=-1)
    gidx = group_scores.topk(tg, dim=-1)[1]
    mask = s.new_ones(t, ng, dtype=torch.bool).scatter_(1, gidx, False)
    scores = s.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
    indices = torch.topk(scores, k, dim=-1)[1]
    weights = original.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights * scale, indices


def _deepseek_v4_gate(logits, bias, k, scale):
    """DeepSeek-V4 inference/model.py Gate.forward (non-hash layers)."""
    scores = torch.nn.functional.softplus(logits).sqrt()
    original = scores
    indices = (scores + bias).topk(k, dim=-1)[1]
    weights = original.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights * scale, indices


def _gpt_oss_gate(logits, k):
    """openai/gpt-oss gpt_oss/torch/model.py MLPBlock.forward routing."""
    experts = torch.topk(logits, k=k, dim=-1, sorted=True)
    return torch.softmax(experts.values, dim=1), experts.indices


def _mixtral_qwen_gate(logits, k, norm):
    """Mixtral / Qwen-MoE: softmax over experts, top-k, optional renormalisation."""
    p = torch.softmax(logits, dim=-1, dtype=torch.float32)
    w, i = torch.topk(p, k, dim=-1)
    if norm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w, i


def _same_as_published(w_pub, i_pub, logits, k, scoring, **kw):
    idx, w = route_reference(logits, k, scoring, **kw)
    # continuous random data: no ties, so the chosen (expert, weight) pairs must agree
    order = torch.argsort(i_pub, dim=1)
    i_sorted, w_sorted = torch.gather(i_pub, 1, order), torch.gather(w_pub, 1, order)
    o2 = torch.argsort(idx, dim=1)
    assert torch.equal(torch.gather(idx, 1, o2), i_sorted)
    torch.testing.assert_close(torch.gather(w, 1, o2), w_sorted.float(), rtol=1e-5, atol=1e-7)


def test_reference_is_deepseek_v3_noaux_tc():
    gen = torch.Generator().manual_seed(31)
    logits = torch.randn(64, 256, generator=gen)
    bias = torch.randn(256, generator=gen) * 0.05
    w, i = _deepseek_v3_gate(logits, bias, 8, 8, 4, 2.5)
    _same_as_published(w, i, logits, 8, "sigmoid_noaux", bias=bias, num_groups=8, topk_groups=4, scaling=2.5)


def test_reference_is_deepseek_v4_sqrtsoftplus():
    gen = torch.Generator().manual_seed(32)
    logits = torch.randn(64, 256, generator=gen)
    bias = torch.randn(256, generator=gen) * 0.05
    w, i = _deepseek_v4_gate(logits, bias, 6, 1.5)
    _same_as_published(w, i, logits, 6, "sqrtsoftplus", bias=bias, scaling=1.5)


def test_reference_is_gpt_oss_and_mixtral_qwen():
    gen = torch.Generator().manual_seed(33)
    logits = torch.randn(64, 128, generator=gen)
    w, i = _gpt_oss_gate(logits, 4)
    _same_as_published(w, i, logits, 4, "topk_softmax")
    for norm in (True, False):
        w, i = _mixtral_qwen_gate(logits, 8, norm)
        _same_as_published(w, i, logits, 8, "softmax_topk", renormalize=norm)


# ----------------------------------------------------------------------------- property test
@st.composite
def _route_case(draw):
    e = draw(st.sampled_from([1, 2, 3, 8, 20, 64, 96, 256, 384, 512]))
    k = draw(st.integers(1, min(32, e)))
    scoring = draw(st.sampled_from(SCORINGS))
    ng = tg = None
    if scoring in BIAS_SCORINGS and draw(st.booleans()):
        divisors = [d for d in range(2, min(e, 32) + 1) if e % d == 0]
        if divisors:
            ng = draw(st.sampled_from(divisors))
            tg = draw(st.integers(max(1, math.ceil(k / (e // ng))), ng))
    t = draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    grid = draw(st.booleans())
    p_special = draw(st.sampled_from([0.0, 0.0, 0.1, 0.6]))
    renorm = draw(st.booleans())
    scaling = draw(st.sampled_from([1.0, 2.5, 0.5]))
    return e, k, scoring, ng, tg, t, seed, grid, p_special, renorm, scaling


@given(_route_case())
def test_property_kernel_matches_reference(device, case):
    e, k, scoring, ng, tg, t, seed, grid, p_special, renorm, scaling = case
    gen = torch.Generator().manual_seed(seed)
    logits = _grid_logits(gen, t, e, step=0.25, span=8) if grid else torch.randn(t, e, generator=gen) * 4
    if p_special:
        r = torch.rand(t, e, generator=gen)
        logits = torch.where(r < p_special / 2, torch.full_like(logits, float("-inf")), logits)
        logits = torch.where((r >= p_special / 2) & (r < p_special), torch.full_like(logits, float("nan")), logits)
    bias = None
    if scoring in BIAS_SCORINGS:
        bias = _grid_bias(gen, e) if grid else torch.randn(e, generator=gen) * 0.2
    idx, w, _, _ = _check(logits, k, scoring, bias, ng, tg, renormalize=renorm, scaling=scaling, device=device)
    # structural invariants
    valid = idx >= 0
    assert ((idx < e) & (idx >= -1)).all()
    assert (w[~valid] == 0).all() and (w >= 0).all()
    assert (valid[:, :-1] | ~valid[:, 1:]).all()       # masked slots only at the end
    if renorm and t:
        s = w.sum(dim=1)
        has = valid.any(dim=1)
        torch.testing.assert_close(s[has], torch.full_like(s[has], scaling), rtol=1e-5, atol=1e-6)
