"""Metrics of codes and reconstructions."""


def per_image_mse(reconstruction, x):
    """Mean squared error per image: ``[batch, ...] -> [batch]``."""
    return ((reconstruction - x) ** 2).flatten(1).mean(1)
