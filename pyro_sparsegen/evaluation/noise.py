"""Corrupted copies of test images, the same for every model.

The authors' protocol (hanaoli/Sparse-ABP, ``hiabp_sparse.py``, ``test_denoise_classify``)
adds ``N(0, sigma^2)`` noise to the test images and does **not** clip the result to [0, 1]:
:func:`add_noise` does the same by default. ``clip=True`` gives the harder variant in which
the noisy image is clipped to [0, 1] (clipping adds a grey background, mean ~0.2 at
``sigma = 0.5``, that a Gaussian likelihood centred on a digit cannot explain).
"""

import numpy as np


def noise_rng(sigma, *, seed=0, repeat=0):
    """The generator of repeat ``repeat`` at noise level ``sigma``: seeded by
    ``(seed, repeat, round(1000 sigma))``, so every model sees the same noisy images and the
    clipped variant clips the very same draws."""
    return np.random.default_rng([int(seed), int(repeat), int(round(float(sigma) * 1000))])


def add_noise(images, sigma, *, seed=0, repeat=0, clip=False):
    """``images + N(0, sigma^2)`` (float32, same shape), clipped to [0, 1] only with ``clip``.

    :param images: ``[N, C, H, W]`` numpy array in [0, 1].
    :param float sigma: noise standard deviation (0 returns a copy of the images).
    """
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    images = np.asarray(images, dtype=np.float32)
    noisy = images.copy()
    if sigma > 0:
        rng = noise_rng(sigma, seed=seed, repeat=repeat)
        noisy += np.float32(sigma) * rng.standard_normal(images.shape, dtype=np.float32)
    if clip:
        np.clip(noisy, 0.0, 1.0, out=noisy)
    return noisy
