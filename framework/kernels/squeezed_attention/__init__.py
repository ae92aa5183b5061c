"""Squeezed Attention kernels: k-means, centroid lookup (single and hierarchical), sparse prefill/decode attention."""

from .ops import (
    AttentionResult,
    ClusterLayout,
    KMeansResult,
    Selection,
    centroid_lookup,
    cluster_contiguous_layout,
    dense_attention,
    hierarchical_lookup,
    kmeans,
    merge_attention,
    decode_path,
    select_from_scores,
    set_decode_path,
    sparse_attention,
    sparse_attention_union,
    unpermute_indices,
)

from .rope_cache import rope_cache_write

__all__ = [
    "AttentionResult",
    "ClusterLayout",
    "KMeansResult",
    "Selection",
    "centroid_lookup",
    "cluster_contiguous_layout",
    "dense_attention",
    "hierarchical_lookup",
    "kmeans",
    "merge_attention",
    "rope_cache_write",
    "decode_path",
    "select_from_scores",
    "set_decode_path",
    "sparse_attention",
    "sparse_attention_union",
    "unpermute_indices",
]
