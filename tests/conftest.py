"""Shared test setup: the device under test and the hypothesis profiles.

On a machine without a GPU the tests run the Triton kernels under the interpreter
(TRITON_INTERPRET=1 is set here before triton is imported); on a GPU they run unchanged on cuda.
Profiles: `ci` (default without a GPU: few examples, bounded time), `gpu` (default with a GPU),
`nightly` (many examples). Select with TMOE_HYPOTHESIS_PROFILE.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               derandomize=False, print_blob=True)
settings.register_profile("ci", max_examples=12, **_common)
settings.register_profile("gpu", max_examples=100, **_common)
settings.register_profile("nightly", max_examples=1000, **_common)
settings.load_profile(os.environ.get("TMOE_HYPOTHESIS_PROFILE", "gpu" if torch.cuda.is_available() else "ci"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the kernels run on: cuda when present, else cpu (Triton interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_report_header(config):
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (TRITON_INTERPRET=1)"
    return f"tmoe device: {dev}; hypothesis profile: {settings._current_profile}"
