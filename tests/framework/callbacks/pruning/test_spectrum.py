"""ESD of Linear and Conv weights against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.callbacks.pruning.spectrum import weight_eigenvalues


@pytest.mark.parametrize("shape", [(48, 20), (20, 48)])
def test_gram_eigenvalues_equal_squared_singular_values(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = np.sort(np.linalg.svd(weight.double().numpy(), compute_uv=False) ** 2)
    for method in ("gram", "svd"):
        got = weight_eigenvalues(weight, method=method, dtype=torch.float64).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    got32 = weight_eigenvalues(weight.half(), method="gram").numpy()  # half weights are cast up
    np.testing.assert_allclose(got32[-5:], expected[-5:], rtol=1e-2)


def test_conv_kernels_pooled_per_spatial_position():
    weight = torch.randn(8, 5, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = []
    for i in range(3):
        for j in range(3):
            matrix = weight[:, :, i, j].numpy() * np.sqrt(0.5)
            expected.extend(np.linalg.svd(matrix, compute_uv=False) ** 2)
    got = weight_eigenvalues(weight, dtype=torch.float64).numpy()
    assert got.shape == (9 * 5,)
    np.testing.assert_allclose(got, np.sort(expected), rtol=1e-9, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        weight_eigenvalues(torch.randn(4, 4), method="qr")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        weight_eigenvalues(torch.randn(4))
