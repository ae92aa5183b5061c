"""Adaptive sample sizes from the random-model accuracy conditions (TR-IP-SSQP code, arXiv:2603.10230).

The optimizer asks the model for a batch of the size these rules give; the estimates are sample means, so a batch of
``N`` i.i.d. draws has ``1/N`` of the single-draw variance.

* gradient (``Estnabf.jl``): ``N_g = C·log(1/(1 − p_g/2)) / (κ_g²·min(Δ⁴, Δ²))`` — makes ``‖ḡ − ∇f‖ ≤ κ_g·Δ·min(Δ, 1)``
  with probability ``≥ 1 − p_g`` for sub-Gaussian noise;
* function values (``Estf.jl``): ``N_f = C / ((1 − p_f/2)·min(κ_f²·Δ⁴, ε²))`` (first order) — ``|f̄ − f| ≤ min(κ_f Δ², ε)``;
  second order (ours, following the STORM-type tightening the paper's second-order analysis needs):
  ``min(κ_f²·Δ⁶, ε²)``, i.e. an ``O(Δ³)`` function error;
* Hessian (``EstHess.jl``): ``N_h = C·log(1/(1 − p_h/2)) / (κ_h²·Δ²)`` — ``‖H̄ − ∇²f‖ ≤ κ_h Δ``.

All sizes are rounded up and clipped to ``[min_samples, max_samples]`` (the codes cap at ``1e5``).
"""

from __future__ import annotations

import math

__all__ = ["gradient_sample_size", "function_sample_size", "hessian_sample_size", "clip_sample_size"]


def clip_sample_size(value: float, min_samples: int, max_samples: int) -> int:
    """``ceil(value)`` clipped to ``[min_samples, max_samples]`` (``nan``/``inf`` → ``max_samples``)."""
    if not math.isfinite(value):
        return max_samples
    return int(min(max(math.ceil(value), min_samples), max_samples))


def gradient_sample_size(radius: float, *, kappa: float, probability: float, constant: float, min_samples: int,
                         max_samples: int) -> int:
    """``N_g`` for trust-region radius ``Δ = radius``."""
    accuracy = kappa**2 * min(radius**4, radius**2)
    return clip_sample_size(constant * math.log(1.0 / (1.0 - probability / 2.0)) / accuracy if accuracy > 0 else math.inf,
                            min_samples, max_samples)


def function_sample_size(radius: float, reliability: float, *, kappa: float, probability: float, constant: float,
                         second_order: bool, min_samples: int, max_samples: int) -> int:
    """``N_f`` for radius ``Δ`` and reliability parameter ``ε``."""
    power = 6 if second_order else 4
    accuracy = min(kappa**2 * radius**power, reliability**2)
    return clip_sample_size(constant / ((1.0 - probability / 2.0) * accuracy) if accuracy > 0 else math.inf,
                            min_samples, max_samples)


def hessian_sample_size(radius: float, *, kappa: float, probability: float, constant: float, min_samples: int,
                        max_samples: int) -> int:
    """``N_h`` for radius ``Δ``."""
    accuracy = kappa**2 * radius**2
    return clip_sample_size(constant * math.log(1.0 / (1.0 - probability / 2.0)) / accuracy if accuracy > 0 else math.inf,
                            min_samples, max_samples)
