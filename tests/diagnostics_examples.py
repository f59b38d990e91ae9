"""Examples shared by the tests of :mod:`pyro_sparsegen.diagnostics` (not a test module)."""

import arviz as az
import numpy as np
import torch

import pyro_sparsegen as psg

CHAINS, DRAWS = 2, 10


# ------------------------------------------------------------------------------------------
# A synthetic posterior whose metrics are known by hand.
#
# 3 images x 5 latent dims, labels [0, 1, 0]:
#   image 0: z = [1.5, 0, 0, 0, 0]                     every draw
#   image 1: z = [2, 2, 2, 2, 0]                       every draw
#   image 2: z = [0, 0, 0, b, 0], b = 1 on odd draws, 0 on even draws
# Inclusion probability 0.95 where |z| > 0.2, else 0.02 -- except image 1, latent 2, which is
# 0.3 (large but "off" by inclusion). Latent 4 is pinned in the spike at 0 for every image.


def synthetic_idata(labels=(0, 1, 0)):
    z = np.zeros((CHAINS, DRAWS, 3, 5))
    z[:, :, 0, 0] = 1.5
    z[:, :, 1, :4] = 2.0
    z[:, 1::2, 2, 3] = 1.0
    prob = np.where(np.abs(z) > 0.2, 0.95, 0.02)
    prob[:, :, 1, 2] = 0.3
    groups = {"posterior": {"z": z, "inclusion_probability": prob}}
    if labels is not None:
        groups["constant_data"] = {"label": np.asarray(labels)}
    return az.from_dict(**groups, dims={"z": ["image", "latent"],
                                        "inclusion_probability": ["image", "latent"],
                                        "label": ["image"]})


def tiny_model(latent_dim=8, slab_weight=0.1):
    torch.manual_seed(0)
    network = psg.MLPGenerator(latent_dim, (1, 8, 8), hidden=(16,))
    return psg.SparseGenerator(network, schedule=psg.schedules.constant(slab_weight))
