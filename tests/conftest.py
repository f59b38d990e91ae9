import os

import pytest
import torch

# PYRO_SPARSEGEN_TEST_DEVICE=cuda runs the suite's models and data on the GPU.
DEVICE = os.environ.get("PYRO_SPARSEGEN_TEST_DEVICE", "cpu")


@pytest.fixture
def device():
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("PYRO_SPARSEGEN_TEST_DEVICE asks for CUDA but none is available")
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
