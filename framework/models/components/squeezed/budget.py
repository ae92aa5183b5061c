"""Budget accounting (research note §3.7 / §7.3): kept fixed-context keys plus index metadata, in KV-equivalents.

The full fixed-context KV cache of one (layer, KV head) holds N keys and N values, i.e. 2N vectors. Attending to K
selected keys reads K keys and K values (2K vectors); a metadata store of M key-sized vectors (centroids, Quest page
bounds) read for every lookup costs M vectors. The measured budget is therefore

    budget = K / N + M / (2 N)

averaged over layers, KV heads, batch rows and lookups. With 5 % centroids and 30 % of keys kept this is the paper's
0.3 + 0.025 = 0.325. Per-key cluster labels are not counted (the paper does not count them either).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BudgetReport:
    """Measured budget over everything recorded so far.

    Attributes:
        kept_fraction: mean of K / N (selected fixed-context keys over all fixed-context keys).
        metadata_fraction: mean of M / (2N) (key-sized metadata vectors over the K+V cache size).
        budget: kept_fraction + metadata_fraction.
        lookups: number of (layer, batch row, KV head) selections averaged.
    """

    kept_fraction: float
    metadata_fraction: float
    budget: float
    lookups: int


def budget_of(kept_keys: float, metadata_vectors: float, num_tokens: int) -> float:
    """The §3.7 formula for one selection: kept_keys / N + metadata_vectors / (2 N)."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return kept_keys / num_tokens + metadata_vectors / (2.0 * num_tokens)


class BudgetMeter:
    """Accumulates the measured budget of many selections (one `record` per layer call)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded."""
        self._kept = 0.0
        self._meta = 0.0
        self._n = 0

    def record(self, key_counts: torch.Tensor, num_tokens: int, metadata_vectors: int) -> None:
        """Record one layer's selection.

        Args:
            key_counts: [B, Hkv] number of selected fixed-context keys per (batch row, KV head).
            num_tokens: N, fixed-context length.
            metadata_vectors: key-sized metadata vectors per KV head read by the lookup (e.g. number of centroids).
        """
        rows = key_counts.numel()
        self._kept += float(key_counts.double().sum().item()) / num_tokens
        self._meta += rows * metadata_vectors / (2.0 * num_tokens)
        self._n += rows

    def report(self) -> BudgetReport:
        """Mean over all recorded (layer, batch row, KV head) selections."""
        if self._n == 0:
            return BudgetReport(kept_fraction=float("nan"), metadata_fraction=float("nan"), budget=float("nan"), lookups=0)
        kept = self._kept / self._n
        meta = self._meta / self._n
        return BudgetReport(kept_fraction=kept, metadata_fraction=meta, budget=kept + meta, lookups=self._n)
