"""Squeezed Attention (arXiv:2411.09688) as a drop-in module, a fixed-context index and a Transformers backend.

Importing this package registers the Transformers attention backend "squeezed".
"""

from framework.models.components.squeezed.baselines import (
    OracleTopK,
    QuestPages,
    RandomKeys,
    RowwiseSelector,
    SlidingWindowSinks,
)
from framework.models.components.squeezed.budget import BudgetMeter, BudgetReport, budget_of
from framework.models.components.squeezed.fixed_context_index import (
    FixedContextIndex,
    IndexMetadata,
    ModelShape,
    context_fingerprint,
)
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.squeezed_attention import SqueezedAttention, SqueezedAttentionOutput
from framework.models.components.squeezed.transformers_backend import (
    BACKEND_NAME,
    AttentionDiagnostics,
    ServingSession,
    register_squeezed_backend,
    serve,
    squeezed_attention_forward,
)

__all__ = [
    "BACKEND_NAME",
    "AttentionDiagnostics",
    "BudgetMeter",
    "BudgetReport",
    "FixedContextIndex",
    "IndexMetadata",
    "LayerIndex",
    "ModelShape",
    "OracleTopK",
    "QuestPages",
    "RandomKeys",
    "RowwiseSelector",
    "ServingSession",
    "SlidingWindowSinks",
    "SqueezedAttention",
    "SqueezedAttentionOutput",
    "budget_of",
    "context_fingerprint",
    "register_squeezed_backend",
    "serve",
    "squeezed_attention_forward",
]
