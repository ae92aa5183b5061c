"""The S4D convolution kernel: a complex diagonal state matrix discretised by zero-order hold.

Continuous system per feature h: ``x' = A x + B u``, ``y = C x`` with ``A = diag(a_1..a_N)``, ``a_n = x_n + i y_n``,
``x_n < 0``. B is fixed to 1 and absorbed into C. Zero-order hold with step ``Δ_h`` gives the discrete poles
``λ_n = exp(Δ a_n)`` and the real kernel (the conjugate modes are implied, hence the ``2 Re``)::

    K[ℓ] = 2 Re Σ_n C_n (exp(Δ a_n) - 1) / a_n · exp(Δ a_n ℓ),     ℓ = 0..L-1

Initialisation (frequency-bias tuning, Yu et al. 2025): ``a_n = -0.5 + i·α·π·(n + imag_offset)``; ``α`` scales the
imaginary parts and with them the frequencies the layer can represent. ``Re A`` is stored through a positive
transform (``Re A = -exp(p)`` or ``-softplus(p)``) so it stays negative (stable) during training. ``Δ`` is drawn
log-uniformly from ``[dt_min, dt_max]`` (equal bounds fix it) and stored as ``log Δ``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from framework.validation import require_choice, require_positive

__all__ = ["S4DKernel", "REAL_TRANSFORMS", "s4d_kernel", "stacked_s4d_kernels"]

REAL_TRANSFORMS = ("exp", "softplus")


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def s4d_kernel(log_dt: Tensor, a_real_raw: Tensor, a_imag: Tensor, c: Tensor, length: int,
               real_transform: str = "exp") -> Tensor:
    """``K [..., C, H, L] = 2 Re Σ_n C_n (e^{ΔA_n} − 1)/A_n · e^{ΔA_n ℓ}`` from the stored parameters.

    Shapes: ``log_dt [..., H]``, ``a_real_raw`` and ``a_imag [..., H, N]``, ``c [..., C, H, N, 2]`` (real view of
    complex C); the leading dimensions ``...`` (none for one layer, the layer index for a stack) batch the whole
    computation, so a stack of layers costs the kernel launches of one.

    The Vandermonde powers are split as ``λ^ℓ = λ^{bm} · λ^j`` (``ℓ = bm + j``, block ``b ≈ √L``): two small power
    tables ``[H, N, b]`` and ``[H, N, L/b]`` and one batched complex matmul over the modes give all L lags, instead of
    materialising the ``[H, N, L]`` table (for the ListOps layers 6 × 128 × 64 × 2048 complex numbers, several GB of
    memory traffic per step with its backward). Same accuracy as the direct table (both take the exponential of
    ``ΔA · ℓ``-sized arguments in float32; tested against a complex128 reference).
    """
    dt = log_dt.exp()[..., None]  # [..., H, 1]
    positive = a_real_raw.exp() if real_transform == "exp" else nn.functional.softplus(a_real_raw)
    a = torch.complex(-positive, a_imag)  # [..., H, N]
    dta = dt * a
    weights = torch.view_as_complex(c) * (torch.exp(dta) - 1.0).unsqueeze(-3) / a.unsqueeze(-3)  # [..., C, H, N]
    block = 1 << max(0, math.ceil(math.log2(length) / 2))  # a power of two >= √L
    blocks = -(-length // block)
    inner = torch.exp(dta[..., None] * torch.arange(block, device=dta.device, dtype=torch.float32))  # [..., H, N, b]
    outer = torch.exp(dta[..., None] * (block * torch.arange(blocks, device=dta.device, dtype=torch.float32)))
    left = weights[..., None] * outer.unsqueeze(-4)  # [..., C, H, N, L/b]
    kernel = torch.einsum("...chnm,...hnj->...chmj", left, inner)  # [..., C, H, L/b, b]: lag b·m + j
    return 2.0 * kernel.real.flatten(-2)[..., :length]


def stacked_s4d_kernels(kernels: list[S4DKernel], length: int) -> Tensor:
    """``K [layers, C, H, L]`` of several :class:`S4DKernel` of the same sizes in one batched computation (float32).

    The parameters are stacked (gradients flow back to each layer's own), so the result equals
    ``torch.stack([k(length) for k in kernels])`` up to float32 rounding, with the launches of one layer.
    """
    if not kernels:
        raise ValueError("stacked_s4d_kernels needs at least one kernel")
    first = kernels[0]
    sizes = {(k.d_model, k.state_size, k.channels, k.real_transform) for k in kernels}
    if len(sizes) != 1:
        raise ValueError(f"stacked kernels must share (d_model, state_size, channels, real_transform), got {sizes}")
    for k in kernels:
        k.check_length(length)
    with torch.autocast(device_type=first.c.device.type, enabled=False):
        stack = [torch.stack([getattr(k, name) for k in kernels]) for name in ("log_dt", "a_real_raw", "a_imag", "c")]
        return s4d_kernel(*stack, length, first.real_transform)


class S4DKernel(nn.Module):
    """Generates the S4D kernel ``K [channels, H, L]`` (real, float32) for a requested length L.

    Args:
        d_model: H, independent SSMs (one per feature).
        state_size: N, complex modes per SSM (each stands for a conjugate pair).
        channels: C, output channels per feature (independent C matrices sharing A and Δ).
        alpha: α > 0, scale of the initial imaginary parts ``Im a_n = α·π·(n + imag_offset)``.
        imag_offset: shift of the mode index (the waves experiment uses 1.3).
        real_init: initial real part (negative), -0.5 in S4D-Lin.
        dt_min, dt_max: log-uniform range of the initial Δ (0 < dt_min <= dt_max).
        real_transform: ``"exp"`` or ``"softplus"``: the positive map behind ``-Re A``.
        learn_a, learn_dt: whether A / Δ are trained (C always is).
        max_length: the longest kernel this layer may produce (longer requests raise).
        c_init_std: standard deviation of the complex normal C (each of real/imag gets ``std/√2``).
    """

    def __init__(
        self,
        *,
        d_model: int,
        state_size: int = 64,
        channels: int = 1,
        alpha: float = 1.0,
        imag_offset: float = 0.0,
        real_init: float = -0.5,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        learn_a: bool = True,
        learn_dt: bool = True,
        max_length: int = 16_384,
        c_init_std: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("state_size", state_size), ("channels", channels),
                            ("max_length", max_length)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha (the imaginary-part scale of the initial A) must be > 0, got {alpha!r}")
        if not isinstance(dt_min, (int, float)) or not isinstance(dt_max, (int, float)) or not (
            math.isfinite(dt_min) and math.isfinite(dt_max) and dt_min > 0 and dt_max > 0
        ):
            raise ValueError(f"the Δ range must be positive: got dt_min={dt_min!r}, dt_max={dt_max!r}")
        if dt_min > dt_max:
            raise ValueError(f"dt_min must be <= dt_max, got dt_min={dt_min!r} > dt_max={dt_max!r}")
        if not isinstance(real_init, (int, float)) or not real_init < 0:
            raise ValueError(f"real_init must be negative (a stable pole), got {real_init!r}")
        require_choice("real_transform", real_transform, REAL_TRANSFORMS)
        require_positive("c_init_std", c_init_std)
        self.d_model, self.state_size, self.channels = d_model, state_size, channels
        self.alpha, self.imag_offset, self.max_length = float(alpha), float(imag_offset), max_length
        self.real_transform = real_transform

        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        real = torch.full((d_model, state_size), -float(real_init))
        raw_real = real.log() if real_transform == "exp" else _inverse_softplus(real)
        imag = self.alpha * math.pi * (torch.arange(state_size, dtype=torch.float32) + self.imag_offset)
        imag = imag.expand(d_model, state_size).clone()
        c = torch.randn(channels, d_model, state_size, dtype=torch.cfloat) * c_init_std
        self.c = nn.Parameter(torch.view_as_real(c))
        self.log_dt = nn.Parameter(log_dt, requires_grad=learn_dt)
        self.a_real_raw = nn.Parameter(raw_real, requires_grad=learn_a)
        self.a_imag = nn.Parameter(imag, requires_grad=learn_a)

    # ------------------------------------------------------------------ parameters
    def ssm_parameters(self) -> list[nn.Parameter]:
        """A and Δ: the parameters that get their own learning rate and no weight decay."""
        return [self.log_dt, self.a_real_raw, self.a_imag]

    @property
    def dt(self) -> Tensor:
        """Step sizes Δ ``[H]``."""
        return self.log_dt.exp()

    @property
    def a(self) -> Tensor:
        """Continuous poles ``A [H, N]`` (complex64), ``Re A < 0``."""
        positive = self.a_real_raw.exp() if self.real_transform == "exp" else nn.functional.softplus(self.a_real_raw)
        return torch.complex(-positive, self.a_imag)

    @property
    def c_complex(self) -> Tensor:
        """Output matrix ``C [channels, H, N]`` (complex64)."""
        return torch.view_as_complex(self.c)

    def discrete_poles(self) -> Tensor:
        """``exp(Δ A) [H, N]``, the poles of the discretised recurrence."""
        return torch.exp(self.dt[:, None] * self.a)

    def discrete_input_weights(self) -> Tensor:
        """``C (exp(Δ A) - 1) / A [channels, H, N]``: the ZOH input weights folded into C."""
        a = self.a
        return self.c_complex * (torch.exp(self.dt[:, None] * a) - 1.0) / a

    # ------------------------------------------------------------------ kernel
    def check_length(self, length: int) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"sequence length must be a positive integer, got {length!r}")
        if length > self.max_length:
            raise ValueError(
                f"sequence length {length} exceeds the configured maximum max_length={self.max_length}; "
                "raise max_length (kernel memory grows as channels·H·N·L)"
            )

    def forward(self, length: int) -> Tensor:
        """Kernel ``K [channels, H, L]`` (float32) for ``L = length``; always computed in float32 (also under autocast)."""
        self.check_length(length)
        with torch.autocast(device_type=self.c.device.type, enabled=False):
            return s4d_kernel(self.log_dt, self.a_real_raw, self.a_imag, self.c, length, self.real_transform)

    def transfer_function(self, omega: Tensor) -> Tensor:
        """Discrete-time transfer function ``G(e^{iω}) [channels, H, F]`` of the kernel (D excluded) at ω ``[F]``
        (radians per sample). Equals the DTFT of the infinite kernel: ``Σ_n w_n/(1 - λ_n e^{-iω}) + conj(w_n)/(1 -
        conj(λ_n) e^{-iω})`` with ``w = C (e^{ΔA}-1)/A``, ``λ = e^{ΔA}``."""
        with torch.autocast(device_type=self.c.device.type, enabled=False):
            z_inv = torch.exp(-1j * omega.to(device=self.c.device, dtype=torch.float64))  # [F], on the parameters' device
            lam = self.discrete_poles().to(torch.complex128)[..., None]  # [H, N, 1]
            w = self.discrete_input_weights().to(torch.complex128)[..., None]  # [C, H, N, 1]
            g = w / (1.0 - lam * z_inv) + w.conj() / (1.0 - lam.conj() * z_inv)
            return g.sum(dim=-2)
