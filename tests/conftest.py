import os

# Under pytest-xdist (the README's `-n 2`) each worker is one of the machine's cores: one torch
# (OpenMP) thread per worker, and the processes a test starts (the CLI, torchrun) inherit it,
# so that two workers do not each spread over every core and slow each other down.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# PYRO_SPARSEGEN_TEST_DEVICE=cuda makes CUDA the default device of every test, so models, chains
# and tensors the tests create live on the GPU (benchmarks/gpu/run.sh uses it).
DEVICE = os.environ.get("PYRO_SPARSEGEN_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _default_device():
    if DEVICE == "cpu":
        yield
        return
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("PYRO_SPARSEGEN_TEST_DEVICE asks for CUDA but none is available")
    torch.set_default_device(DEVICE)
    try:
        yield
    finally:
        torch.set_default_device("cpu")


@pytest.fixture
def device():
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Float64 as the default dtype for tests that compare numbers."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
