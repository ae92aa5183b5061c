"""Components of CGM-GM (conditional ground-motion generation with a dynamic VAE): embedding, posterior, sequential
prior, decoder, Gaussian helpers and Griffin–Lim."""

from framework.models.components.cgm_gm.decoder import FrameDecoder
from framework.models.components.cgm_gm.dynamic_vae import DynamicVAEOutput, GroundMotionDVAE
from framework.models.components.cgm_gm.embedding import ConditionEmbedding
from framework.models.components.cgm_gm.gaussian import gaussian_kl, reparameterize
from framework.models.components.cgm_gm.griffin_lim import griffin_lim, spectral_convergence
from framework.models.components.cgm_gm.posterior import GRUPosterior
from framework.models.components.cgm_gm.prior import SequentialPrior

__all__ = [
    "ConditionEmbedding",
    "DynamicVAEOutput",
    "FrameDecoder",
    "GRUPosterior",
    "GroundMotionDVAE",
    "SequentialPrior",
    "gaussian_kl",
    "griffin_lim",
    "reparameterize",
    "spectral_convergence",
]
