"""Small models with an exactly computable Hessian for the probe tests (imported by the test modules)."""

from __future__ import annotations

import torch

from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.probe_loss import ProbeLoss


def mse_loss(module, batch):
    x, y = batch
    return ((module(x).squeeze(-1) - y) ** 2).mean()


def make_tiny_problem(seed: int = 0, hidden: int = 4, n: int = 32):
    """A tanh MLP 3 -> hidden -> 1 (P = 4*hidden + 1 + 12 ... small) and one regression batch."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.sin(x.sum(dim=1))
    return model, [(x, y)]


def exact_hessian(model, batches, loss_fn=mse_loss):
    """Dense Hessian [P, P] of the weighted probe loss via torch.autograd.functional.hessian."""
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)
    loss = ProbeLoss(model, batches, loss_fn=loss_fn)

    def f(flat):
        return loss.functional(space.unflatten(flat))

    return torch.autograd.functional.hessian(f, theta)
