"""Directions of a landscape plane, as flat vectors ``[P]`` over a :class:`ParameterSpace`.

* ``"filter"`` (Li et al. 2018): a Gaussian direction, and for every parameter tensor with more than one dimension
  each slice along dim 0 (a conv filter / an output neuron) is rescaled to the norm of the same slice of θ:
  d_i ← d_i · ‖θ_i‖ / (‖d_i‖ + 1e-10).
* ``"layer"`` (LossLens / Landscaper): each whole tensor of the direction is rescaled to the norm of θ's tensor.
* ``"none"``: the raw Gaussian direction.

One-dimensional tensors (biases, normalisation affine parameters) follow ``bias_policy``: ``"zero"`` (Li's
``--xignore biasbn``, the default), ``"copy"`` (Li's code without that flag: the direction equals θ's tensor) or
``"normalize"`` (treated like any tensor by ``normalization``; one slice for "filter").

Eigenvector directions (unit vectors from the Hessian) are used as they are: rescaling them per layer, as Landscaper
does, makes them stop being eigenvectors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from framework.callbacks.landscape.parameter_vectors import ParameterSpace

__all__ = ["BIAS_POLICIES", "NORMALIZATIONS", "normalize_direction", "random_directions"]

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_POLICIES = ("zero", "copy", "normalize")


def normalize_direction(
    direction: Tensor, theta: Tensor, space: ParameterSpace, *, normalization: str = "filter", bias_policy: str = "zero"
) -> Tensor:
    """Normalise ``direction`` ``[P]`` against the parameters ``theta`` ``[P]``; returns a new ``[P]`` vector."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    if bias_policy not in BIAS_POLICIES:
        raise ValueError(f"bias_policy must be one of {list(BIAS_POLICIES)}, got {bias_policy!r}")
    d_parts = space.unflatten(direction.clone())
    t_parts = space.unflatten(theta)
    out = []
    for name in space.names:
        d, t = d_parts[name], t_parts[name]
        if d.dim() <= 1 and bias_policy != "normalize":
            out.append(torch.zeros_like(d) if bias_policy == "zero" else t.clone())
            continue
        if normalization == "filter":
            d2 = d.reshape(d.shape[0], -1) if d.dim() >= 1 else d.reshape(1, 1)
            t2 = t.reshape(t.shape[0], -1) if t.dim() >= 1 else t.reshape(1, 1)
            if d.dim() == 1:  # a vector is one slice ("normalize" policy)
                d2, t2 = d.reshape(1, -1), t.reshape(1, -1)
            scale = t2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + 1e-10)
            out.append((d2 * scale).reshape(d.shape))
        elif normalization == "layer":
            out.append(d * (t.norm() / (d.norm() + 1e-10)))
        else:
            out.append(d)
    return space.flatten(out)


def random_directions(
    theta: Tensor,
    space: ParameterSpace,
    *,
    count: int,
    seed: int,
    normalization: str = "filter",
    bias_policy: str = "zero",
) -> Tensor:
    """``count`` seeded Gaussian directions ``[count, P]``, each normalised against ``theta``.

    The raw Gaussian draws depend only on ``seed`` and ``P``, so the same plane (up to the normalisation, which
    follows the current weights) is sampled at every epoch.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(count, space.dim, generator=generator, dtype=torch.float32)
    raw = raw.to(device=theta.device, dtype=theta.dtype)
    return torch.stack([
        normalize_direction(raw[i], theta, space, normalization=normalization, bias_policy=bias_policy)
        for i in range(count)
    ])
