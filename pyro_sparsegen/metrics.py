"""Metrics of codes and reconstructions: the per-image MSE and the two masks of which code
coordinates are in use (imports only :mod:`pyro_sparsegen.distributions`)."""

import torch

from .distributions import is_included


def per_image_mse(reconstruction, x):
    """Mean squared error per image: ``[batch, ...] -> [batch]``."""
    return ((reconstruction - x) ** 2).flatten(1).mean(1)


def inclusion_mask(model, z):
    """Which coordinates of codes ``z: [batch, latent]`` are included under ``model``'s prior
    (:func:`~pyro_sparsegen.distributions.is_included` of their inclusion probability), or
    ``None`` for priors without one."""
    try:
        with torch.no_grad():
            return is_included(model.inclusion_probability(z))
    except (NotImplementedError, AttributeError):
        return None


def active_mask(model, z, threshold):
    """``(|z| > threshold, inclusion mask)`` of codes ``z: [batch, latent]``; the second is
    ``None`` for priors without inclusion probabilities (:func:`inclusion_mask`)."""
    return z.abs() > threshold, inclusion_mask(model, z)
