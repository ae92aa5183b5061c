"""Batched k-means in torch (GPU or CPU) as the paper's offline clustering does it.

Per head: keys are L2-normalized and clustered with Lloyd's algorithm on the unit sphere (squared Euclidean distance
between normalized keys and cluster means = the "cosine assignment" cuML performs when fed normalized keys, which is
what the authors' ``clustering.py`` does), k-means++ initialization, empty clusters re-seeded deterministically with
the keys farthest from their centroid; the stored centroid is the mean of the RAW keys of the cluster (so centroid
norms keep their meaning for ``q . c``), a zero vector for a cluster that ends empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .results import KMeansResult

__all__ = ["kmeans"]

_ASSIGN_BYTES = {"cpu": 256 * 1024 * 1024, "cuda": 2 * 1024**3}  # bound on one [H, chunk, C] score block
INITS = ("k-means++", "random")


def _check(x: torch.Tensor, num_clusters: int, iters: int, tol: float, init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape [H, N, D], got {shape}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"x.dtype must be a floating type (float16, bfloat16, float32, float64), got {x.dtype}")
    h, n, d = x.shape
    if h < 1 or n < 1 or d < 1:
        raise ValueError(f"x must have H, N, D >= 1, got shape {tuple(x.shape)}")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be an int in [1, N={n}], got {num_clusters!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")


def _sq_dist_to(xn: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[H, N]`` squared distance of every point to one center per head (``centers [H, D]``)."""
    return (xn - centers[:, None, :]).pow(2).sum(-1)


def _kmeanspp(xn: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``[H, C, D]`` centers drawn from the points (D^2 weighting), per head."""
    h, n, d = xn.shape
    heads = torch.arange(h, device=xn.device)
    centers = torch.empty(h, c, d, dtype=xn.dtype, device=xn.device)
    first = torch.randint(0, n, (h,), generator=gen, device=xn.device)
    centers[:, 0] = xn[heads, first]
    d2 = _sq_dist_to(xn, centers[:, 0])
    for i in range(1, c):
        total = d2.sum(-1, keepdim=True)
        # all points coincide with chosen centers (duplicates): fall back to uniform weights
        weights = torch.where(total > 0, d2.clamp(min=0), torch.ones_like(d2))
        pick = torch.multinomial(weights, 1, generator=gen).squeeze(-1)
        centers[:, i] = xn[heads, pick]
        d2 = torch.minimum(d2, _sq_dist_to(xn, centers[:, i]))
    return centers


def _random_init(xn: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
    """``[H, C, D]`` centers: C distinct points per head drawn uniformly (one step, for large inputs)."""
    h, n, d = xn.shape
    pick = torch.rand(h, n, generator=gen, device=xn.device).topk(c, dim=-1).indices
    return xn.gather(1, pick[..., None].expand(h, c, d))


def _assign(xn: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest mean per point: ``labels [H, N]`` int64 and squared distances ``[H, N]`` fp32.

    Works in chunks of points so that no temporary grows with ``H * N * C`` or ``H * N * D``."""
    h, n, _ = xn.shape
    c = mu.shape[1]
    mu_sq = mu.pow(2).sum(-1)  # [H, C]
    budget = _ASSIGN_BYTES["cuda" if xn.is_cuda else "cpu"]
    chunk = max(1, min(n, budget // max(1, 4 * h * c)))
    labels = torch.empty(h, n, dtype=torch.long, device=xn.device)
    dist = torch.empty(h, n, dtype=xn.dtype, device=xn.device)
    for s in range(0, n, chunk):
        xc = xn[:, s : s + chunk]
        # argmin ||x - mu||^2 = argmin (||mu||^2 - 2 x.mu); first index wins ties (deterministic)
        if xn.is_cuda:  # one fused GEMM epilogue instead of three passes over the [H, chunk, C] block
            lab = torch.baddbmm(mu_sq[:, None, :], xc, mu.transpose(1, 2), alpha=-2.0).argmin(-1)
        else:
            lab = (mu_sq[:, None, :] - 2.0 * torch.bmm(xc, mu.transpose(1, 2))).argmin(-1)
        labels[:, s : s + chunk] = lab
        # exact, not the expanded form
        dist[:, s : s + chunk] = (xc - mu.gather(1, lab[..., None].expand_as(xc))).pow(2).sum(-1)
    return labels, dist


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums ``[H, C, D]`` and counts ``[H, C]`` (int64)."""
    h, n, d = x.shape
    flat = (labels + torch.arange(h, device=x.device)[:, None] * c).reshape(-1)
    sums = torch.zeros(h * c, d, dtype=x.dtype, device=x.device).index_add_(0, flat, x.reshape(-1, d))
    counts = torch.bincount(flat, minlength=h * c)
    return sums.view(h, c, d), counts.view(h, c)


def _update(xn: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, c: int) -> torch.Tensor:
    """Cluster means; an empty cluster takes the point farthest from its own mean (distinct points per head)."""
    sums, counts = _cluster_sums(xn, labels, c)
    mu = sums / counts.clamp(min=1)[..., None].to(xn.dtype)
    empty = counts == 0
    if bool(empty.any()):
        for h in torch.nonzero(empty.any(-1)).flatten().tolist():
            ids = torch.nonzero(empty[h]).flatten()
            far = torch.topk(dist[h], ids.numel(), sorted=True).indices
            mu[h, ids] = xn[h, far]
    return mu


def kmeans(
    x: torch.Tensor,
    num_clusters: int,
    *,
    iters: int = 300,
    seed: int = 0,
    tol: float = 1e-4,
    init: str = "k-means++",
    normalize: bool = True,
) -> KMeansResult:
    """Cluster the keys of every head (see the module docstring for the algorithm).

    Args:
        x: ``[H, N, D]`` keys (any float dtype; computed in fp32 on x's device).
        num_clusters: C, ``1 <= C <= N``.
        iters: maximum Lloyd iterations (the paper's cuML setting is 300).
        seed: seeds k-means++ (same seed, same device -> same result).
        tol: stop when the relative inertia decrease falls below ``tol`` (or no label changes).
        init: "k-means++" (the paper's; C sequential passes over the points) or "random" (C distinct points per
            head, one step: for contexts where C passes are too slow, e.g. 128K keys x 256 heads).
        normalize: True (the paper's cosine assignment on L2-normalized keys) or False (plain Euclidean k-means of
            the raw vectors, e.g. for product quantization; the stored centroid is the raw mean either way).

    Returns:
        :class:`KMeansResult` with ``centroids [H, C, D]`` fp32 (mean of raw keys), ``labels [H, N]`` int64,
        ``cluster_sizes [H, C]`` int64 and the per-iteration ``inertia`` (non-increasing).
    """
    _check(x, num_clusters, iters, tol, init)
    xf = x.float()
    xn = F.normalize(xf, dim=-1, eps=1e-12) if normalize else xf
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    mu = _kmeanspp(xn, num_clusters, gen) if init == "k-means++" else _random_init(xn, num_clusters, gen)
    inertia: list[float] = []
    labels = None
    for _ in range(iters):
        new_labels, dist = _assign(xn, mu)
        value = float(dist.double().sum().item())
        unchanged = labels is not None and bool(torch.equal(new_labels, labels))
        labels = new_labels
        inertia.append(value)
        if unchanged or (len(inertia) > 1 and inertia[-2] - value <= tol * max(inertia[-2], 1e-30)):
            break
        mu = _update(xn, labels, dist, num_clusters)
    sums, counts = _cluster_sums(xf, labels, num_clusters)
    centroids = sums / counts.clamp(min=1)[..., None].float()  # empty cluster -> zero centroid
    return KMeansResult(centroids=centroids, labels=labels, cluster_sizes=counts, inertia=inertia)
