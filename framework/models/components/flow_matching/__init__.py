"""Flow matching for forecasting: probability paths, fixed-step samplers, the vector-field network and the frame
autoencoder (see ``docs/flow_matching.md``)."""

from framework.models.components.flow_matching.frame_autoencoder import FrameAutoencoderNetwork
from framework.models.components.flow_matching.paths import (
    PATHS,
    BridgePath,
    LipmanOTPath,
    PathSample,
    ProbabilityPath,
    StochasticInterpolantPath,
    VEDiffusionPath,
    VPDiffusionPath,
    make_path,
)
from framework.models.components.flow_matching.samplers import SOLVERS, field_evaluations, integrate
from framework.models.components.flow_matching.vector_field import VectorFieldNetwork, sinusoidal_embedding

__all__ = [
    "PATHS",
    "SOLVERS",
    "BridgePath",
    "FrameAutoencoderNetwork",
    "LipmanOTPath",
    "PathSample",
    "ProbabilityPath",
    "StochasticInterpolantPath",
    "VEDiffusionPath",
    "VPDiffusionPath",
    "VectorFieldNetwork",
    "field_evaluations",
    "integrate",
    "make_path",
    "sinusoidal_embedding",
]
