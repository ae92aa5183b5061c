"""Squeezed Attention (arXiv:2411.09688) as a drop-in module, a fixed-context index and a Transformers backend.

Importing this package registers the Transformers attention backend "squeezed".
"""

from models.components.squeezed.baselines import (
    OracleTopK,
    QuestPages,
    RandomKeys,
    RowwiseSelector,
    SlidingWindowSinks,
)
from models.components.squeezed.budget import BudgetMeter, BudgetReport, budget_of
from models.components.squeezed.fixed_context_index import (
    FixedContextIndex,
    IndexMetadata,
    ModelShape,
    context_fingerprint,
)
from models.components.squeezed.layer_index import LayerIndex
from models.components.squeezed.squeezed_attention import SqueezedAttention, SqueezedAttentionOutput
from models.components.squeezed.transformers_backend import (
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
