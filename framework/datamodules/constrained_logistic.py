"""Binary classification data for constrained logistic regression: scikit-learn's shipped datasets or a LIBSVM file.

The TR-StoSQP experiments use LIBSVM binary datasets (australian, breast-cancer, diabetes, heart, ionosphere, sonar,
splice, svmguide3). Without network access, the shipped scikit-learn datasets stand in (``breast_cancer`` is the
Wisconsin diagnostic set; ``wine`` / ``iris`` / ``digits`` are made binary as noted below), and any LIBSVM-format file
the user has can be given by path (labels mapped to ±1; two distinct labels required).

Features are standardised (training mean / std) and a constant 1 column is appended for the intercept, so
``num_features`` (linked to the model by the CLI) counts it. The model draws its own i.i.d. batches through
:meth:`ConstrainedLogisticDataModule.draw_batch`; the training loader only counts iterations, and the validation
loader yields the whole dataset as one batch (full objective, constraint violation and accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from framework.base import FrameworkDataModule
from framework.base.data_files import require_data_file
from framework.validation import require_choice

__all__ = ["ConstrainedLogisticDataModule", "SKLEARN_DATASETS", "load_binary_dataset"]

#: name -> how the multi-class sets are made binary.
SKLEARN_DATASETS = {
    "breast_cancer": "malignant vs benign (native binary)",
    "wine": "class 0 vs classes 1, 2",
    "iris": "versicolor vs setosa, virginica (not linearly separable)",
    "digits": "digits 0-4 vs 5-9",
}


def load_binary_dataset(dataset: str | None, libsvm_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, p)`` float64 and labels ``(n,)`` in ``{−1, +1}``."""
    if libsvm_path is not None:
        from sklearn.datasets import load_svmlight_file

        path = require_data_file("libsvm_path", libsvm_path)
        try:
            features, labels = load_svmlight_file(str(path))
        except ValueError as error:
            raise ValueError(f"libsvm_path={str(libsvm_path)!r} is not a valid LIBSVM file: {error}") from None
        features = np.asarray(features.todense(), dtype=np.float64)
        values = np.unique(labels)
        if values.size != 2:
            raise ValueError(
                f"libsvm_path={str(libsvm_path)!r} must hold a binary problem (2 distinct labels), got labels "
                f"{values.tolist()[:10]}"
            )
        return features, np.where(labels == values.max(), 1.0, -1.0)
    require_choice("dataset", dataset, tuple(SKLEARN_DATASETS))
    from sklearn import datasets as skd

    if dataset == "breast_cancer":
        data = skd.load_breast_cancer()
        target = data.target == 1
    elif dataset == "wine":
        data = skd.load_wine()
        target = data.target == 0
    elif dataset == "iris":
        data = skd.load_iris()
        target = data.target == 1
    else:
        data = skd.load_digits()
        target = data.target <= 4
    return np.asarray(data.data, dtype=np.float64), np.where(target, 1.0, -1.0)


class ConstrainedLogisticDataModule(FrameworkDataModule):
    """Binary classification data served to a model that draws its own batches.

    Args:
        dataset: one of ``SKLEARN_DATASETS`` (ignored when ``libsvm_path`` is given).
        libsvm_path: path of a LIBSVM-format binary classification file.
        iterations: optimizer iterations per epoch (training-loader length).
        seed: seed of the batch-drawing generator (its state is part of the model's checkpoint).
    """

    def __init__(self, *, dataset: str = "breast_cancer", libsvm_path: str | None = None, iterations: int = 1000,
                 seed: int = 0) -> None:
        super().__init__(batch_size=1, num_workers=0, seed=seed)
        if libsvm_path is None:
            require_choice("dataset", dataset, tuple(SKLEARN_DATASETS))
        else:
            require_data_file("libsvm_path", libsvm_path)
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations <= 0:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self.dataset = dataset
        self.libsvm_path = libsvm_path
        self.iterations = iterations
        features, labels = load_binary_dataset(dataset, libsvm_path)
        mean, std = features.mean(axis=0), features.std(axis=0)
        std[std == 0] = 1.0
        features = (features - mean) / std
        features = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
        self.features = torch.from_numpy(features)
        self.labels = torch.from_numpy(labels)

    @property
    def num_features(self) -> int:
        """Feature dimension including the intercept column."""
        return int(self.features.shape[1])

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    def draw_batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``size`` i.i.d. draws (with replacement) from the empirical distribution: ``(z (size, p), y (size,))``."""
        index = torch.randint(self.num_samples, (int(size),), generator=generator)
        return self.features.index_select(0, index), self.labels.index_select(0, index)

    def train_dataloader(self) -> DataLoader:
        return self.make_dataloader(TensorDataset(torch.arange(self.iterations)), shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.features, self.labels), batch_size=self.num_samples, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
