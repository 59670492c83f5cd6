"""kernels/ptx_patch.py: the CTA barriers Triton 3.6 puts before a TMA ring's mbarrier operations go, nothing else."""
from tmoe.kernels.ptx_patch import RING_MARKER, drop_ring_barriers

_PTX = """
	// begin inline asm
	// {marker} %r1
	// end inline asm
	@%p47 mbarrier.init.shared::cta.b64 [%r119], 1;
	bar.sync 	0;
	@%p21 mbarrier.arrive.expect_tx.shared.b64 _, [%r119], 65536;
	wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {{%r1}}, {{%r2}}, %rd25, 0, 1, 1, 0;
$L__BB0_5:
	add.s32 	%r293, %r66, %r18;
	bar.sync 	0;
	and.pred 	%p42, %p47, %p39;
	// begin inline asm
	@%p42 mbarrier.arrive.expect_tx.shared.b64 _, [%r293], 65536;
	// end inline asm
	.loc	1 658 92                        // wgmma_gemm.py:658:92
	bar.sync 	0;
	elect.sync 	%r295|%p44, -1;
	// begin inline asm
	@%p43 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r294], [%rd16, {{%r539, %r124}}], [%r293];
	// end inline asm
	bfe.u32 	%r274, %r282, 1, 1;
	bar.sync 	0;
	// begin inline asm
	{{
	.reg .pred complete;
	waitLoop:
	mbarrier.try_wait.parity.shared.b64 complete, [%r273], %r274;
	@!complete bra.uni waitLoop;
	}}
	bar.sync 	0;
	ld.shared.b32 	%r5, [%r6];
	bar.sync 	0;
	@%p47 mbarrier.inval.shared::cta.b64 [%r119];
"""


def test_drop_ring_barriers_only_before_the_rings_mbarrier_ops():
    ptx = _PTX.format(marker=RING_MARKER)
    out, dropped = drop_ring_barriers(ptx)
    assert dropped == 3
    assert out.count("bar.sync") == ptx.count("bar.sync") - 3
    head, loop = out.split("wgmma.mma_async")
    assert "bar.sync" in head                               # init -> first TMA: kept (before the first wgmma)
    assert loop.count("bar.sync") == 2                      # before the ld.shared and the mbarrier.inval: kept
    assert "bar.sync \t0;\n\tld.shared" in loop and "bar.sync \t0;\n\t@%p47 mbarrier.inval" in loop


def test_drop_ring_barriers_leaves_other_kernels_alone():
    ptx = _PTX.format(marker="some other kernel")
    assert drop_ring_barriers(ptx) == (ptx, 0)
