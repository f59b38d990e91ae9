"""Baselines built in the same framework, saved in the same checkpoint format.

- dense ABP: :func:`dense_config` (the same model with a constant dense prior, trained by
  :func:`pyro_sparsegen.train`);
- β-VAE: :class:`BetaVAE`; VSC (Tonolini et al., UAI 2019): :class:`VSC`; both trained by
  SVI with :func:`train_baseline` (``kind`` in :data:`KINDS`); :func:`recommended` gives
  their own recommended training (Adam lr 1e-3, default betas, early stopping on a validation
  ELBO with a learning-rate drop; VSC's alpha = 0.01 and c warmed up 50 -> 200).
"""

from .dense import dense_config
from .encoders import AmortizedGenerator, MLPEncoder
from .svi import (KINDS, EarlyStopping, build_baseline, plateau, recommended, split_validation,
                  train_baseline, validation_loss)
from .vae import BetaVAE, BetaVAELoss, scale_sites
from .vsc import VSC, RelaxedSpikeAndSlab, VSCLoss

__all__ = ["AmortizedGenerator", "BetaVAE", "BetaVAELoss", "EarlyStopping", "KINDS",
           "MLPEncoder", "RelaxedSpikeAndSlab", "VSC", "VSCLoss", "build_baseline",
           "dense_config", "plateau", "recommended", "scale_sites", "split_validation",
           "train_baseline", "validation_loss"]
