"""The 11 TinyMem unlearning methods, for any Transformers causal LM with GPT-2, Llama, GPT-NeoX or OPT MLP blocks.

Usage::

    from framework.models.components.tinymem.unlearning import BalancedSubnet, UnlearningData

    data = UnlearningData(memorized=mem_ids, clean=clean_ids, prompt_len=50)   # [N, T], [M, T] token ids
    result = BalancedSubnet(ratio=0.01, epochs=10)(model, data)                 # edits model in place
"""

from framework.models.components.tinymem.unlearning.base import UnlearningMethod, UnlearningResult
from framework.models.components.tinymem.unlearning.mlp_locator import (
    MLP_LAYOUTS,
    MLPBlock,
    locate_mlp_blocks,
    mlp_weight_parameters,
    neuron_hook,
    neuron_hooks,
)
from framework.models.components.tinymem.unlearning.neuron_methods import (
    Activations,
    HardConcrete,
    IntegratedGradients,
    NeuronUnlearning,
    Slimming,
    ZeroOut,
)
from framework.models.components.tinymem.unlearning.supermask import BalancedSubnet, Subnet, balanced_loss, supermask
from framework.models.components.tinymem.unlearning.unlearning_data import UnlearningData, exclude_rows, sequence_nll
from framework.models.components.tinymem.unlearning.weight_methods import (
    Durable,
    DurableAggregate,
    Greedy,
    SecondOrderUnlearning,
)

# Paper names -> classes, neuron-level first (the order of the paper's tables).
UNLEARNING_METHODS: dict[str, type[UnlearningMethod]] = {
    cls.name: cls
    for cls in (ZeroOut, Activations, Slimming, HardConcrete, IntegratedGradients, Greedy, Durable, DurableAggregate,
                SecondOrderUnlearning, Subnet, BalancedSubnet)
}

__all__ = [
    "MLP_LAYOUTS",
    "UNLEARNING_METHODS",
    "Activations",
    "BalancedSubnet",
    "Durable",
    "DurableAggregate",
    "Greedy",
    "HardConcrete",
    "IntegratedGradients",
    "MLPBlock",
    "NeuronUnlearning",
    "SecondOrderUnlearning",
    "Slimming",
    "Subnet",
    "UnlearningData",
    "UnlearningMethod",
    "UnlearningResult",
    "ZeroOut",
    "balanced_loss",
    "exclude_rows",
    "locate_mlp_blocks",
    "mlp_weight_parameters",
    "neuron_hook",
    "neuron_hooks",
    "sequence_nll",
    "supermask",
]
