"""The README's run command (`python -m tmoe`): small workload on CPU (interpreter), full one on a GPU."""
import torch

from tmoe.__main__ import main


def test_demo_runs_checks_and_reports_tiles(capsys):
    tokens = ["--tokens", "4"] if not torch.cuda.is_available() else ["--workload", "small", "--tokens", "8"]
    assert main(tokens) == 0
    out = capsys.readouterr().out
    assert "-> PASS" in out and "GEMM1 tiles:" in out and "GEMM2 tiles:" in out
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9:
        assert "gluon kernel" in out           # decode tiles on Hopper
