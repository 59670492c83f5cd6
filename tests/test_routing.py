"""Device routing metadata: expert-sorted slots, offsets and stats against a plain python oracle."""
import torch
from hypothesis import given, strategies as st

from tmoe.kernels.routing import build_routing


def _oracle(idx: torch.Tensor, num_local: int, start: int):
    flat = idx.flatten().tolist()
    order, offsets = [], [0]
    for e in range(start, start + num_local):
        order += [s for s, v in enumerate(flat) if v == e]
        offsets.append(len(order))
    return order, offsets


@given(t=st.integers(0, 70), k=st.integers(1, 8), num_local=st.integers(1, 40), start_block=st.integers(0, 2),
       masked=st.floats(0, 1), hot=st.booleans(), seed=st.integers(0, 2**16))
def test_sorted_slots_match_oracle(device, t, k, num_local, start_block, masked, hot, seed):
    g = torch.Generator().manual_seed(seed)
    num_experts = num_local * 3
    start = start_block * num_local
    idx = torch.randint(0, num_experts, (t, k), generator=g)
    if hot:
        idx[:, 0] = start
    idx[torch.rand(t, k, generator=g) < masked] = -1
    stats = torch.full((num_local,), 3, dtype=torch.int32)
    plan = build_routing(idx.to(device), num_local, expert_start=start, stats=stats.to(device))
    order, offsets = _oracle(idx, num_local, start)
    assert plan.expert_offsets.cpu().tolist() == offsets
    assert plan.sorted_slots[: offsets[-1]].cpu().tolist() == order
    counts = torch.tensor(offsets[1:]) - torch.tensor(offsets[:-1])
    # stats are accumulated, not overwritten
    stats_dev = torch.full((num_local,), 3, dtype=torch.int32, device=device)
    build_routing(idx.to(device), num_local, expert_start=start, stats=stats_dev)
    assert torch.equal(stats_dev.cpu(), 3 + counts.to(torch.int32))


def test_workspace_is_reused(device):
    ws = {}
    idx = torch.randint(0, 8, (10, 2)).to(device)
    p1 = build_routing(idx, 8, workspace=ws)
    p2 = build_routing(idx.flip(0).contiguous(), 8, workspace=ws)
    assert p1.sorted_slots.data_ptr() == p2.sorted_slots.data_ptr()


def test_many_chunks_single_expert(device):
    # More slots than one chunk, all on one expert: the chunk scan must carry across chunks.
    idx = torch.full((300, 2), 5, dtype=torch.long)
    idx[::7, 1] = -1
    plan = build_routing(idx.to(device), 8)
    order, offsets = _oracle(idx, 8, 0)
    assert plan.expert_offsets.cpu().tolist() == offsets
    assert plan.sorted_slots[: offsets[-1]].cpu().tolist() == order


def test_one_chunk_and_chunk_boundaries(device):
    """T * K at, just below and just above one chunk (64 slots under the interpreter, 128 on a GPU): the
    one-program path (`_single_chunk_kernel`) and the three-launch path agree with the oracle, stats included."""
    chunk = 64 if device.type == "cpu" else 128
    g = torch.Generator().manual_seed(5)
    for slots in (1, chunk - 1, chunk, chunk + 1):
        idx = torch.randint(-1, 24, (slots, 1), generator=g)
        idx[0, 0] = 9                                          # at least one local slot
        stats = torch.zeros(8, dtype=torch.int32, device=device)
        plan = build_routing(idx.to(device), 8, expert_start=8, stats=stats)
        order, offsets = _oracle(idx, 8, 8)
        assert plan.expert_offsets.cpu().tolist() == offsets, slots
        assert plan.sorted_slots[: offsets[-1]].cpu().tolist() == order, slots
        assert stats.cpu().tolist() == [b - a for a, b in zip(offsets, offsets[1:])], slots


def test_routing_zeroes_the_rows_done_counters(device):
    """Both routing paths (one program, three launches) set `expert_rows_done` to zero for every local expert (GEMM1
    adds finished rows to it, early GEMM2 waits on it), reusing a workspace whose counters hold the last call's."""
    chunk = 64 if device.type == "cpu" else 128
    workspace = {}
    for slots in (5, 3 * chunk + 1, 5):
        idx = torch.randint(-1, 8, (slots, 1), generator=torch.Generator().manual_seed(slots))
        plan = build_routing(idx.to(device), 8, workspace=workspace)
        assert plan.expert_rows_done.shape == (8,) and plan.expert_rows_done.dtype == torch.int32
        assert plan.expert_rows_done.cpu().tolist() == [0] * 8, slots
        plan.expert_rows_done.fill_(77)                  # what GEMM1 leaves behind


def test_one_program_widths_with_many_experts(device):
    """The one-program kernel sized to the slots (16 / 32 / 64 lanes) with dsv3's 256 local experts (E_PAD 512, the
    offsets gathered per lane), experts outside the rank's range and masked slots included."""
    g = torch.Generator().manual_seed(7)
    for t, k in ((1, 8), (2, 8), (3, 8), (7, 8), (1, 1)):
        idx = torch.randint(-1, 512, (t, k), generator=g)
        stats = torch.zeros(256, dtype=torch.int32, device=device)
        plan = build_routing(idx.to(device), 256, expert_start=256, stats=stats)
        order, offsets = _oracle(idx, 256, 256)
        assert plan.expert_offsets.cpu().tolist() == offsets, (t, k)
        assert plan.sorted_slots[: offsets[-1]].cpu().tolist() == order, (t, k)
        assert stats.cpu().tolist() == [b - a for a, b in zip(offsets, offsets[1:])], (t, k)


def test_scan_carries_across_chunk_blocks_and_expert_blocks(device):
    """The three-launch path past one scan block of chunks (16 chunks of 64 slots under the interpreter, 256 of 128
    on a GPU) with 256 local experts (E_PAD 512: 64 scan programs of 8 experts), a hot expert in the last expert
    block, masked and non-local slots, stats accumulated."""
    chunk, scan_block = (64, 16) if device.type == "cpu" else (128, 256)
    slots = chunk * scan_block * 2 + 37
    g = torch.Generator().manual_seed(11)
    idx = torch.randint(-1, 512, (slots, 1), generator=g)
    idx[::5, 0] = 256 + 250                                    # hot: expert 250 of the rank
    stats = torch.ones(256, dtype=torch.int32, device=device)
    plan = build_routing(idx.to(device), 256, expert_start=256, stats=stats)
    order, offsets = _oracle(idx, 256, 256)
    assert plan.expert_offsets.cpu().tolist() == offsets
    assert plan.sorted_slots[: offsets[-1]].cpu().tolist() == order
    assert stats.cpu().tolist() == [1 + b - a for a, b in zip(offsets, offsets[1:])]
