"""The sorted token rows GEMM1's TMA ring reads (kernels/row_gather.py) against torch indexing of the plan."""
import pytest
import torch
from hypothesis import given, strategies as st

from tmoe.kernels.routing import build_routing
from tmoe.kernels.row_gather import gather_rows, gather_rows_reference


@given(t=st.integers(1, 40), k=st.integers(1, 8), num_local=st.integers(1, 12), h=st.sampled_from([32, 96, 160, 1040]),
       masked=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_gather_rows_matches_torch(device, t, k, num_local, h, masked, seed):
    """Every routed row (slots masked -1 or routed to other ranks' experts are not rows), in the plan's order; the
    rows past the routed count are left as they were."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 2 * num_local, (t, k), generator=g)       # half the experts live on another rank
    idx[torch.rand(t, k, generator=g) < masked] = -1
    x = torch.randint(-2**15, 2**15, (t, h), generator=g, dtype=torch.int16)
    plan = build_routing(idx.to(device), num_local)
    out = torch.full((t * k + 3, h), 7, dtype=torch.int16, device=device)
    want = gather_rows_reference(x.to(device), plan, k, out.clone())
    assert torch.equal(gather_rows(x.to(device), plan, k, out), want)
    total = int(plan.expert_offsets[-1])
    assert bool((out[total:] == 7).all())


def test_gather_rows_rejects_bad_shapes(device):
    idx = torch.zeros(4, 2, dtype=torch.int64, device=device)
    plan = build_routing(idx, 1)
    x = torch.zeros(4, 64, dtype=torch.int16, device=device)
    with pytest.raises(ValueError, match="rows"):
        gather_rows(x, plan, 2, torch.zeros(7, 64, dtype=torch.int16, device=device))       # 8 slots
    with pytest.raises(ValueError, match="row length"):
        gather_rows(x, plan, 2, torch.zeros(8, 32, dtype=torch.int16, device=device))
    with pytest.raises(ValueError, match="dtype"):
        gather_rows(x, plan, 2, torch.zeros(8, 64, dtype=torch.float16, device=device))
