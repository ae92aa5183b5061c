"""One torch thread for these small-tensor tests: on a shared 2-core machine, intra-op threading of tiny kernels
is many times slower than one thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
