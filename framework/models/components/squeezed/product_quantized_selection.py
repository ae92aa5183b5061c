"""Per-key score estimates from product-quantized keys (ours; issue 21), as a key selector at a given budget.

The paper estimates every key of a cluster by one centroid: one codebook of C ≈ 5 % of N vectors. Issue 21 found
that this estimate, not the budget, loses the needle (the per-token oracle top-k keeps 94 % of the needles at 0.125
where the centroid selection keeps 43 %). Product quantization (Jégou et al., 2011) splits the D channels into m
groups and clusters each group separately (k codewords each), so a key is represented by m codeword ids and
``q·k ≈ Σ_j q_j · codebook_j[code_j(k)]`` — k^m distinct reconstructions from m·k stored codewords — and every key
gets its own estimate from m table look-ups.

Cost per lookup, in key-sized vectors (a key = D values of 16 bits): the codebooks (m·k·D/m = k·D values → k
vectors) plus the codes (N·m·log2(k) bits → N·m·log2(k) / (16·D) vectors). With m = 8, k = 16, D = 64 that is
16 + N/32 vectors, i.e. 0.0156 + 8/N of the K+V cache — less than the paper's 5 % centroids (0.025).

The selector ranks all N fixed-context keys by the estimated attention probability (softmax of the estimated logits
per query, averaged over the group's queries: the rule of `OracleTopK`) and keeps the top ones; the codebooks are
fitted lazily per layer (Euclidean k-means of each channel group, `kmeans(normalize=False)`) and cached.

``head_allocation="mass"`` (ours, session 10) spends the layer's keys jointly over its KV heads: each head's estimate
is a probability distribution over the same N keys, so keeping the Hkv·K largest estimated probabilities of all
heads together maximizes the estimated attention mass kept at the same total count — a head whose attention is
concentrated gives keys to one whose attention is spread. The per-head top-K (``"equal"``) is the default.

``refine_ratio = r >= 1`` (ours, session 12) uses the estimate only to shortlist: the r·K keys of largest estimated
probability (sinks and window first) are candidates, and their exact attention probabilities keep the best K
(`exact_refinement.refine_candidates`, the rule session 6 tried on centroids). The candidates' keys are read, so they
are charged like metadata: K + (quantizer + r·K) / 2 key+value vectors per head, solved for K — at the same budget
fewer keys are kept, each chosen by its exact score.
"""

from __future__ import annotations

import math

import torch

from framework.kernels.squeezed_attention import Selection, kmeans
from framework.models.components.squeezed.baselines import BudgetedSelector
from framework.models.components.squeezed.exact_refinement import candidate_count, refine_candidates
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.selection_tools import selection_from_indices


def fit_product_quantizer(
    keys: torch.Tensor, *, subspaces: int, codewords: int, iters: int = 25, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product quantizer of every head's keys.

    Args:
        keys: [H, N, D] keys; D divisible by `subspaces`.
        subspaces: m, channel groups of D / m channels.
        codewords: k per group, 1 <= k <= N.
        iters: k-means iterations.
        seed: k-means seed.

    Returns:
        (codebooks [H, m, k, D/m] fp32, codes [H, N, m] int64).
    """
    h, n, d = keys.shape
    if d % subspaces:
        raise ValueError(f"head dim {d} is not divisible by subspaces={subspaces}")
    if not 1 <= codewords <= n:
        raise ValueError(f"codewords must be in [1, {n}] (the number of keys), got {codewords}")
    sub = keys.float().reshape(h, n, subspaces, d // subspaces).permute(0, 2, 1, 3).reshape(h * subspaces, n, -1)
    fit = kmeans(sub, codewords, iters=iters, seed=seed, normalize=False)
    codebooks = fit.centroids.reshape(h, subspaces, codewords, d // subspaces)
    codes = fit.labels.reshape(h, subspaces, n).permute(0, 2, 1).contiguous()
    return codebooks, codes


def estimated_logits(query: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Unscaled logits q·k̂ of every key from its product-quantized reconstruction k̂.

    Args:
        query: [B, Hkv, R, D] queries grouped by KV head (R = G·T rows).
        codebooks: [Hkv, m, k, D/m]; codes: [Hkv, N, m].

    Returns:
        [B, Hkv, R, N] fp32.
    """
    b, hkv, r, d = query.shape
    m, k = codebooks.shape[1], codebooks.shape[2]
    q = query.float().reshape(b, hkv, r, m, d // m)
    tables = torch.einsum("bhrmc,hmkc->bhrmk", q, codebooks)  # [B, Hkv, R, m, k]: q_j . codeword
    n = codes.shape[1]
    index = codes.transpose(1, 2).reshape(1, hkv, 1, m, n).expand(b, hkv, r, m, n)
    return tables.gather(-1, index).sum(dim=3)


class ProductQuantizedTopK(BudgetedSelector):
    """Top keys by the attention probability estimated from product-quantized keys.

    Args:
        budget: total budget in (0, 1] (kept keys / N + codebooks and codes / 2N).
        subspaces: m channel groups (the head dim must be divisible by it). 16 (groups of 4 channels at head dim
            64) was chosen over 8 on issue 21's validation split and confirmed on its test split at 2K, 4K and 8K.
        codewords: k codewords per group (log2(k) bits per code).
        kmeans_iters: k-means iterations of the codebook fit.
        sinks: the first `sinks` keys are always kept (attention sinks, as `SqueezedAttention(attention_sinks=...)`).
        window: the last `window` keys are always kept (as the paper's observation window).
        head_allocation: ``"equal"`` keeps K keys per KV head; ``"mass"`` keeps the Hkv·K keys of largest estimated
            probability over all the layer's KV heads of a batch row together (the same total, so the same measured
            budget), each head keeping at least its sinks and window. ``"mass"`` builds its selection through one host
            sync (the largest per-head count), so it is for evaluation, not for a graph-captured decode step.
        refine_ratio: 0 (off) or r >= 1: the estimate shortlists r·K candidates, exact scores keep K of them;
            the candidates are charged to the budget. Needs ``head_allocation="equal"``.
    """

    def __init__(
        self, *, budget: float, subspaces: int = 16, codewords: int = 16, kmeans_iters: int = 25, sinks: int = 0,
        window: int = 0, head_allocation: str = "equal", refine_ratio: float = 0.0,
    ) -> None:
        super().__init__(budget=budget)
        if head_allocation not in ("equal", "mass"):
            raise ValueError(f"head_allocation must be 'equal' or 'mass', got {head_allocation!r}")
        if (isinstance(refine_ratio, bool) or not isinstance(refine_ratio, (int, float))
                or not math.isfinite(float(refine_ratio)) or not (refine_ratio == 0 or refine_ratio >= 1)):
            raise ValueError(f"refine_ratio must be 0 (off) or a finite number >= 1, got {refine_ratio!r}")
        if refine_ratio and head_allocation != "equal":
            raise ValueError(f"refine_ratio={refine_ratio} needs head_allocation='equal', got {head_allocation!r}")
        self.refine_ratio = float(refine_ratio)
        self.head_allocation = head_allocation
        for name, value in (("subspaces", subspaces), ("codewords", codewords), ("kmeans_iters", kmeans_iters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, value in (("sinks", sinks), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.sinks, self.window = sinks, window
        if codewords < 2:
            raise ValueError(f"codewords must be >= 2 (a code of at least one bit), got {codewords}")
        self.subspaces, self.codewords, self.kmeans_iters = subspaces, codewords, kmeans_iters
        self._fits: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return (f"budget={self.budget}, subspaces={self.subspaces}, codewords={self.codewords}, sinks={self.sinks}, "
                f"window={self.window}, head_allocation={self.head_allocation!r}"
                + (f", refine_ratio={self.refine_ratio}" if self.refine_ratio else ""))

    def quantizer_vectors(self, layer: LayerIndex) -> float:
        """Codebooks (k vectors) + codes (N·m·log2(k) bits at 16·D bits per key-sized vector)."""
        d = layer.keys.shape[-1]
        code_bits = layer.num_tokens * self.subspaces * math.ceil(math.log2(self.codewords))
        return self.codewords + code_bits / (16.0 * d)

    def metadata_vectors(self, layer: LayerIndex) -> float:
        """The quantizer, plus the candidates' keys under exact refinement."""
        return self.quantizer_vectors(layer) + (self.refine_counts(layer)[1] if self.refine_ratio else 0)

    def num_keys(self, layer: LayerIndex) -> int:
        """K per (batch row, KV head): ``K + (quantizer + candidates) / 2 = budget · N`` (candidates = r·K)."""
        if not self.refine_ratio:
            return super().num_keys(layer)
        n = layer.num_tokens
        keep = (self.budget * n - self.quantizer_vectors(layer) / 2.0) / (1.0 + self.refine_ratio / 2.0)
        return int(min(n, max(1, round(keep))))

    def refine_counts(self, layer: LayerIndex) -> tuple[int, int]:
        """(K kept, M candidates) per (batch row, KV head) under exact refinement; M = min(N, max(K, round(r·K)))."""
        keep = self.num_keys(layer)
        return keep, candidate_count(keep, self.refine_ratio, layer.num_tokens)

    def share_fits_with(self, other: "ProductQuantizedTopK") -> "ProductQuantizedTopK":
        """Use `other`'s cache of fitted quantizers (same subspaces, codewords and iterations), so that many
        selectors over the same index — rows at several budgets, one selector per layer — fit each layer once.

        Raises:
            ValueError: when the quantizer settings differ (the fits would not be the same).
        """
        mine = (self.subspaces, self.codewords, self.kmeans_iters)
        theirs = (other.subspaces, other.codewords, other.kmeans_iters)
        if mine != theirs:
            raise ValueError(f"cannot share quantizer fits: (subspaces, codewords, kmeans_iters) {mine} != {theirs}")
        self._fits = other._fits
        return self

    def quantizer(self, layer: LayerIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """(codebooks [Hkv, m, k, D/m], codes [Hkv, N, m]) of the layer's keys, fitted once and cached."""
        key = id(layer.keys)
        # The entry keeps a reference to the keys tensor, so its id cannot be reused by another tensor meanwhile.
        if key not in self._fits or self._fits[key][0] is not layer.keys:
            codebooks, codes = fit_product_quantizer(
                layer.keys[0], subspaces=self.subspaces, codewords=min(self.codewords, layer.num_tokens),
                iters=self.kmeans_iters,
            )
            self._fits[key] = (layer.keys, codebooks, codes)
        return self._fits[key][1], self._fits[key][2]

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns a `Selection` of `num_keys` keys per (B, Hkv) — per head with
        ``head_allocation="equal"``, on average over the Hkv heads of each batch row with ``"mass"``."""
        codebooks, codes = self.quantizer(layer)
        b, hq, t, d = query.shape
        hkv = codebooks.shape[0]
        q = query.reshape(b, hkv, (hq // hkv) * t, d)
        logits = estimated_logits(q, codebooks.to(query.device), codes.to(query.device)) * scale
        probs = torch.softmax(logits, dim=-1).mean(dim=2)  # [B, Hkv, N]
        n = probs.shape[-1]
        if self.sinks + self.window > self.num_keys(layer):
            raise ValueError(
                f"budget {self.budget} keeps {self.num_keys(layer)} keys of N={n}, fewer than sinks={self.sinks} + "
                f"window={self.window} always kept"
            )
        always = torch.zeros(n, dtype=torch.bool, device=probs.device)
        always[: self.sinks] = True
        always[max(0, n - self.window) :] = True
        probs = probs.masked_fill(always, float("inf"))  # kept first, whatever their estimate
        k = self.num_keys(layer)
        if self.refine_ratio:
            keep, m = self.refine_counts(layer)
            shortlist = torch.topk(probs, m, dim=-1).indices  # [B, Hkv, M], the forced keys among them
            keys = layer.keys.to(query.device)
            chosen = refine_candidates(query, keys, shortlist, keep=keep, scale=scale, forced=always)
            return selection_from_indices(chosen)
        if self.head_allocation == "equal" or hkv == 1:
            return selection_from_indices(torch.topk(probs, k, dim=-1).indices)
        # One pool of Hkv·N keys per batch row: its Hkv·K largest estimates (the forced keys, Hkv·(S + W) <= Hkv·K,
        # come first). Indices into the pool decompose as head · N + key.
        flat = torch.topk(probs.reshape(b, hkv * n), hkv * k, dim=-1).indices  # [B, Hkv·K]
        head, key = flat // n, flat % n
        counts = torch.zeros(b, hkv, dtype=torch.int64, device=probs.device)
        counts.scatter_add_(1, head, torch.ones_like(head))
        k_max = int(counts.max().item())
        # Per head, its chosen keys in pool order (sort by head, stable), placed in slots 0 .. count - 1.
        order = torch.sort(head, dim=-1, stable=True).indices
        head, key = head.gather(1, order), key.gather(1, order)
        start = torch.cumsum(counts, dim=1) - counts  # [B, Hkv] first pool slot of each head
        slot = torch.arange(hkv * k, device=probs.device).unsqueeze(0) - start.gather(1, head)
        indices = torch.zeros(b, hkv, k_max, dtype=torch.int64, device=probs.device)
        indices[torch.arange(b, device=probs.device).unsqueeze(1), head, slot] = key
        return selection_from_indices(indices, counts)
