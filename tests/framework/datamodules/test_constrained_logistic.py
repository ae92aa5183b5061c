"""Constrained logistic regression data (scikit-learn sets, LIBSVM files) and model with the SQP optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from framework.datamodules.constrained_logistic import ConstrainedLogisticDataModule
from framework.optim.constrained_protocol import oracle_from_module
from framework.optim.line_search_sqp import AdaptiveL1SQP
from framework.optim.trsqp import TRSQP
from framework.models.constrained_logistic_regression import ConstrainedLogisticRegression


@pytest.mark.parametrize("name,rows,cols", [("breast_cancer", 569, 31), ("wine", 178, 14), ("iris", 150, 5)])
def test_sklearn_datasets_are_standardised_with_intercept(name, rows, cols):
    dm = ConstrainedLogisticDataModule(dataset=name)
    assert dm.features.shape == (rows, cols) and dm.num_features == cols
    assert set(dm.labels.unique().tolist()) == {-1.0, 1.0}
    np.testing.assert_allclose(dm.features[:, :-1].mean(0).numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(dm.features[:, -1].numpy(), 1.0)
    z, y = dm.draw_batch(17, torch.Generator().manual_seed(0))
    assert z.shape == (17, cols) and y.shape == (17,)


def write_libsvm(path, labels):
    rows = [f"{lab} 1:{0.5 * i} 3:{(-1) ** i * 0.25 * i}" for i, lab in enumerate(labels)]
    path.write_text("\n".join(rows) + "\n")


def test_libsvm_file_from_a_user_path(tmp_path):
    path = tmp_path / "tiny.libsvm"
    write_libsvm(path, [1, -1, 1, 1, -1, -1, 1, -1])
    dm = ConstrainedLogisticDataModule(libsvm_path=str(path))
    assert dm.features.shape == (8, 4)  # 3 feature columns + intercept
    assert dm.labels.tolist() == [1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0]
    path2 = tmp_path / "zero_one.libsvm"
    write_libsvm(path2, [0, 1, 0, 1])
    assert ConstrainedLogisticDataModule(libsvm_path=str(path2)).labels.tolist() == [-1.0, 1.0, -1.0, 1.0]


def test_libsvm_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="libsvm_path must be an existing file"):
        ConstrainedLogisticDataModule(libsvm_path=str(tmp_path / "missing.libsvm"))
    multi = tmp_path / "multi.libsvm"
    write_libsvm(multi, [1, 2, 3, 1])
    with pytest.raises(ValueError, match="binary problem"):
        ConstrainedLogisticDataModule(libsvm_path=str(multi))
    garbage = tmp_path / "garbage.libsvm"
    garbage.write_text("this is not libsvm\n")
    with pytest.raises(ValueError, match="not a valid LIBSVM file"):
        ConstrainedLogisticDataModule(libsvm_path=str(garbage))
    with pytest.raises(ValueError, match="dataset must be one of"):
        ConstrainedLogisticDataModule(dataset="mnist")


def test_model_bad_inputs():
    with pytest.raises(ValueError, match="num_constraints must be smaller than num_features"):
        ConstrainedLogisticRegression(num_features=4, num_constraints=4)
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        ConstrainedLogisticRegression(num_features=0)
    model = ConstrainedLogisticRegression(num_features=8)
    with pytest.raises(RuntimeError, match="has no data"):
        model.draw_batch(3)


def full_batch_reference(dm, model):
    z, y = dm.features.numpy(), dm.labels.numpy()
    a, b = model.constraint_matrix.numpy(), model.constraint_rhs.numpy()

    def f(w):
        m = y * (z @ w)
        return np.logaddexp(0, -m).mean(), -(z * (y / (1 + np.exp(m)))[:, None]).mean(0)

    res = minimize(f, np.zeros(z.shape[1]), jac=True, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda w: a @ w - b, "jac": lambda w: a}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    return res.fun


@pytest.mark.parametrize("cls,kwargs", [(TRSQP, dict(hessian="estimated", max_samples=2000)),
                                        (AdaptiveL1SQP, dict(max_samples=2000))])
def test_sqp_optimizers_solve_constrained_logistic_regression(cls, kwargs):
    dm = ConstrainedLogisticDataModule(dataset="iris")  # not linearly separable: a finite minimiser
    model = ConstrainedLogisticRegression(num_features=dm.num_features, num_constraints=2, constraint_seed=1)
    model.attach_data(dm)
    opt = cls(model.parameters(), **kwargs)
    oracle = oracle_from_module(model)
    for _ in range(150):
        opt.step(oracle=oracle)
    reference = full_batch_reference(dm, model)
    with torch.no_grad():
        full = float(model.objective((dm.features, dm.labels)))
        violation = float(model.constraints().norm())
    assert violation < 1e-6
    assert full == pytest.approx(reference, abs=5e-3)
