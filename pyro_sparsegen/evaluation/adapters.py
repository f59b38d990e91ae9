"""The few calls the protocols make on a trained model, in one place.

Every protocol reaches a model through these functions only, so a change of the model's API
(a public ``decode``, a learned prior with its own sampler) is made here once:

- :func:`decode`: codes ``z: [n, d]`` -> mean images ``g(z): [n, C, H, W]`` (``model.decode``);
- :func:`images_to_codes`: images -> codes with the model's own code inference
  (:func:`pyro_sparsegen.make_inference` for ABP models: the short Langevin run with the
  model's prior, initialisation, steps and sparsification, exactly as in training; one encoder
  pass for the amortised baselines);
- :func:`reconstruct`: ``decode(images_to_codes(x))`` in batches, as numpy;
- :func:`sample_images`: draws from the model's prior (``model.generate``, which follows the
  model's own ``prior()``: the schedule's prior, or a learned prior where a variant overrides it).

Random draws (Langevin noise, a prior initialisation, prior samples) come from a generator
seeded by the caller's ``seed`` inside :func:`torch.random.fork_rng`, so a protocol gives the
same numbers on every call and never disturbs the caller's random state.
"""

import contextlib

import numpy as np
import torch

from ..distributions import is_included


@contextlib.contextmanager
def seeded(seed, device="cpu"):
    """Run the block with torch's global RNG seeded by ``seed`` and restore it afterwards
    (``seed=None``: no seeding, no restoring)."""
    if seed is None:
        yield
        return
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def decode(model, z):
    """The likelihood's mean ``g(z)``: ``z: [n, d]`` -> ``[n, C, H, W]`` (no gradient)."""
    with torch.no_grad():
        return model.decode(z)


def images_to_codes(encoder, x):
    """Codes ``[n, d]`` for images ``x: [n, C, H, W]`` with ``encoder`` (``images -> z``: a
    :class:`~pyro_sparsegen.CodeInference` or an amortised encoder), detached. Gradients are
    enabled: a Langevin inference differentiates the log density."""
    with torch.enable_grad():
        z = encoder(x)
    return z.detach()


encode = images_to_codes  # its earlier name, an alias for one release


def _as_tensor(images, device):
    if isinstance(images, torch.Tensor):
        return images.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(images, dtype=np.float32), device=device)


def reconstruct(model, encoder, images, *, batch_size=100, device="cpu", seed=0):
    """``decode(model, images_to_codes(encoder, x))`` for every image, in batches.

    :param images: ``[N, C, H, W]`` numpy array or tensor (any values: a noisy image is not
        clipped here).
    :return: float32 numpy ``[N, C, H, W]``, the reconstructions as the model returns them
        (not clipped either).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    out = []
    with seeded(seed, device):
        for start in range(0, len(images), batch_size):
            x = _as_tensor(images[start:start + batch_size], device)
            out.append(decode(model, images_to_codes(encoder, x)).cpu().numpy())
    shape = tuple(images.shape)
    return np.concatenate(out).astype(np.float32, copy=False).reshape(shape) if out else \
        np.zeros(shape, dtype=np.float32)


def inclusion_mask(model, z):
    """The included coordinates of ``z`` (:func:`~pyro_sparsegen.distributions.is_included`:
    inclusion probability ``>= 0.5``, as training sparsifies) under the model's prior, or
    ``None`` when the prior has none (a Gaussian)."""
    try:
        with torch.no_grad():
            return is_included(model.inclusion_probability(z))
    except (NotImplementedError, AttributeError):
        return None


def model_device(model):
    """The device a model computes on: its first parameter's (a module), or the code site's
    in one generation trace (a :class:`~pyro_sparsegen.FunctionModel`)."""
    if hasattr(model, "parameters"):
        return next((p.device for p in model.parameters()), torch.device("cpu"))
    return getattr(model, "device", torch.device("cpu"))


def sample_images(model, n, *, seed=0, sparsify=False, batch_size=500, device=None):
    """``n`` images ``g(z)``, ``z`` drawn from the model's prior (``model.generate``).

    :param bool sparsify: set every coordinate whose inclusion probability is below 0.5 to
        exactly 0 before decoding, as a model trained with ``langevin.sparsify`` decodes its
        codes (the spike collapsed to a point mass); ignored for priors without inclusion
        probabilities.
    :return: float32 numpy ``[n, C, H, W]``.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n!r}")
    if device is None:
        device = model_device(model)
    out = []
    with seeded(seed, device):
        for start in range(0, n, batch_size):
            images, z = model.generate(min(batch_size, n - start))
            if sparsify:
                mask = inclusion_mask(model, z)
                if mask is not None:
                    images = decode(model, z * mask)
            out.append(images.detach().cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)
