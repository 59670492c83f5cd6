"""TMA row copies (tmoe/dispatch/tma_copy.py): the box geometry on CPU; on a GPU (sm_90+) the copy
kernels move exactly the rows they should, bitwise, and nothing past a row's end."""
import pytest
import torch

from tmoe.dispatch import tma_copy


@pytest.mark.parametrize("hidden,want", [(7168, (28, 256, 32)), (2880, (45, 64, 64)), (2048, (8, 256, 8)),
                                         (64, (1, 64, 1)), (4104, (513, 8, 1024))])
def test_row_box(hidden, want):
    if want[2] > 256:
        with pytest.raises(ValueError, match="hidden=4104"):
            tma_copy.row_box(hidden)
    else:
        assert tma_copy.row_box(hidden) == want


def test_row_box_rejects_odd_hidden():
    with pytest.raises(ValueError, match="hidden=36"):
        tma_copy.row_box(36)


def test_row_descriptor_rejects_strided_rows():
    with pytest.raises(ValueError, match="contiguous 16-bit rows"):
        tma_copy.row_descriptor(torch.zeros(8, 128, dtype=torch.int16)[:, :64])


needs_tma = pytest.mark.skipif(not (torch.cuda.is_available() and tma_copy.tma_copy_available(torch.device("cuda"))),
                               reason="TMA copies need an sm_90+ GPU")


@needs_tma
@pytest.mark.parametrize("hidden", [7168, 2880, 64])
@pytest.mark.parametrize("pull", [False, True])
def test_block_rows_bitwise(hidden, pull):
    """Two 'ranks' on one GPU: rank 0 pushes (pulls) rows_per_peer rows to (from) rank 1's buffer."""
    dev = torch.device("cuda")
    rows_per_peer = 37
    gen = torch.Generator(device=dev).manual_seed(hidden)
    src = torch.randint(-2**15, 2**15, (rows_per_peer, hidden), dtype=torch.int16, device=dev, generator=gen)
    peers = [torch.full((2 * rows_per_peer, hidden), 7, dtype=torch.int16, device=dev) for _ in range(2)]
    if pull:
        peers[1][:rows_per_peer] = src          # rank 0 reads rows 0.. of rank 1
        src_before = torch.full_like(src, 7)
        src.copy_(src_before)
    tma_copy.block_rows(src, peers, rows_per_peer, rank=0, grid=5, stages=2, pull=pull)
    torch.cuda.synchronize()
    if pull:
        assert torch.equal(src, peers[1][:rows_per_peer])
    else:
        assert torch.equal(peers[1][:rows_per_peer], src)
        assert bool((peers[1][rows_per_peer:] == 7).all()) and bool((peers[0] == 7).all())
