"""Baselines built in the same framework, saved in the same checkpoint format.

- dense ABP: :func:`dense_config` (the same model with a constant dense prior, trained by
  :func:`pyro_sparsegen.train`);
- β-VAE: :class:`BetaVAE`; VSC (Tonolini et al., UAI 2019): :class:`VSC`; both trained by
  SVI with :func:`train_baseline` (``kind`` in :data:`KINDS`).
"""

from .dense import dense_config
from .encoders import AmortizedGenerator, MLPEncoder
from .svi import KINDS, build_baseline, train_baseline
from .vae import BetaVAE, BetaVAELoss, scale_sites
from .vsc import VSC, RelaxedSpikeAndSlab, VSCLoss

__all__ = ["AmortizedGenerator", "BetaVAE", "BetaVAELoss", "KINDS", "MLPEncoder",
           "RelaxedSpikeAndSlab", "VSC", "VSCLoss", "build_baseline", "dense_config",
           "scale_sites", "train_baseline"]
