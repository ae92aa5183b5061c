"""Linear algebra of the linearised equality constraints ``c(x) + G(x) s = 0`` at one iterate.

From the thin SVD ``G = U Σ Vᵀ`` (``G`` shape ``(m, d)``) everything SQP needs is cheap and numerically stable:

* the null-space projector ``P = I − V Vᵀ`` (applied as a function, never formed),
* the minimum-norm normal step ``v = −G⁺ c = −V Σ⁻¹ Uᵀ c`` (solves ``G v = −c`` exactly when ``G`` has full row rank),
* least-squares multipliers ``λ̄ = −(G Gᵀ)⁻¹ G g = −U Σ⁻¹ Vᵀ g``, so that ``g + Gᵀλ̄ = P g`` is the reduced gradient.

Rank deficiency (LICQ failure) is detected from the singular values: by default it raises a ``ValueError`` that names
the singular values; with ``on_rank_deficient="truncate"`` the directions with tiny singular values are dropped (a
truncated-SVD pseudo-inverse: the normal step then solves the linearised constraints in the least-squares sense and
the projector is onto the null space of the numerically full-rank part of ``G``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from framework.validation import require_choice, require_in_range

__all__ = ["ConstraintGeometry", "RANK_DEFICIENCY_POLICIES"]

RANK_DEFICIENCY_POLICIES = ("raise", "truncate")


@dataclass
class ConstraintGeometry:
    """Constraint values and the SVD of their Jacobian at one point.

    Attributes:
        values: ``c(x)``, shape ``(m,)``.
        jacobian: ``G(x)``, shape ``(m, d)``.
        left: ``U``, shape ``(m, r)`` (``r`` = numerical rank).
        singular_values: ``Σ``, shape ``(r,)``.
        right: ``V``, shape ``(d, r)``; orthonormal basis of the row space of ``G``.
        truncated: True when directions were dropped because ``G`` was rank-deficient.
    """

    values: Tensor
    jacobian: Tensor
    left: Tensor
    singular_values: Tensor
    right: Tensor
    truncated: bool = False

    @classmethod
    def from_jacobian(
        cls,
        values: Tensor,
        jacobian: Tensor,
        *,
        rank_tolerance: float = 1e-10,
        on_rank_deficient: str = "raise",
    ) -> "ConstraintGeometry":
        """Factorise ``G``; raise (or truncate) when its smallest singular value is ``≤ rank_tolerance · σ_max``."""
        require_in_range("rank_tolerance", rank_tolerance, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_choice("on_rank_deficient", on_rank_deficient, RANK_DEFICIENCY_POLICIES)
        m, d = jacobian.shape
        if m == 0:
            empty = jacobian.new_zeros(0)
            return cls(values, jacobian, jacobian.new_zeros(0, 0), empty, jacobian.new_zeros(d, 0))
        if not torch.isfinite(jacobian).all() or not torch.isfinite(values).all():
            raise ValueError(f"constraint values or Jacobian are not finite at this point: c = {values.tolist()}")
        u, s, vh = torch.linalg.svd(jacobian, full_matrices=False)
        threshold = rank_tolerance * float(s[0]) if s.numel() else 0.0
        keep = s > threshold
        if m > d or not bool(keep.all()):
            if on_rank_deficient == "raise":
                raise ValueError(
                    f"the constraint Jacobian (m={m} constraints, d={d} parameters) is rank-deficient: singular values "
                    f"{[float(f'{v:.3e}') for v in s.tolist()]}, smallest <= rank_tolerance*largest = {threshold:.3e} "
                    "(LICQ fails: constraints are redundant or degenerate here). Remove redundant constraints, or set "
                    "on_rank_deficient='truncate' to use a truncated-SVD least-squares normal step and multipliers"
                )
            return cls(values, jacobian, u[:, keep], s[keep], vh[keep].T, truncated=True)
        return cls(values, jacobian, u, s, vh.T)

    # ------------------------------------------------------------------ operators
    @property
    def num_constraints(self) -> int:
        return self.values.numel()

    @property
    def rank(self) -> int:
        return self.singular_values.numel()

    def project_null(self, vector: Tensor) -> Tensor:
        """``P v``: the component of ``v`` (shape ``(d,)``) in the null space of ``G``."""
        if self.rank == 0:
            return vector.clone()
        return vector - self.right @ (self.right.T @ vector)

    def normal_step(self) -> Tensor:
        """Minimum-norm solution ``v`` of ``G v = −c`` (least squares if truncated), shape ``(d,)``."""
        if self.rank == 0:
            return self.jacobian.new_zeros(self.jacobian.shape[1])
        return -self.right @ ((self.left.T @ self.values) / self.singular_values)

    def correction_step(self, values_at_trial: Tensor) -> Tensor:
        """Second-order correction ``−G⁺ c(x + s)`` with ``G`` of the current iterate, shape ``(d,)``."""
        if self.rank == 0:
            return self.jacobian.new_zeros(self.jacobian.shape[1])
        return -self.right @ ((self.left.T @ values_at_trial) / self.singular_values)

    def multipliers(self, gradient: Tensor) -> Tensor:
        """Least-squares multipliers ``λ̄ = −(G Gᵀ)⁻¹ G g``, shape ``(m,)``."""
        if self.rank == 0:
            return self.values.new_zeros(self.num_constraints)
        return -self.left @ ((self.right.T @ gradient) / self.singular_values)

    def null_space_basis(self) -> Tensor:
        """An orthonormal basis ``Z`` of the null space of ``G``, shape ``(d, d − r)`` (dense; for small ``d``)."""
        d = self.jacobian.shape[1]
        if self.rank == 0:
            return torch.eye(d, dtype=self.jacobian.dtype, device=self.jacobian.device)
        q, _ = torch.linalg.qr(self.right, mode="complete")
        return q[:, self.rank :]
