"""The variant priors of ``variant_priors.py``, each in the two routes a user has: the package's
:class:`~pyro_sparsegen.SparseGenerator` (its ``prior=`` presets, or a subclass overriding
``prior()``), and a plain Pyro function built by a factory ``NAME(image_shape, config)`` (what
``pyro-sparsegen train --model variant_models:NAME`` takes). The functions use only the public
API: a generator network, :class:`~pyro_sparsegen.Annealed` for the schedule's position, and
``pyro.param`` / ``pyro.sample``.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

import pyro_sparsegen as psg

# The Laplace prior's scale: b = 0.5 gives the variance 2 b² = 0.5, between the spike and the
# slab of the default schedule's final spike-and-slab (whose variance is w · 1 + (1 - w) · 0.04²,
# 0.8 at w 0.8); a fixed scale, since under MAP-ABP a learned one is not identifiable.
LAPLACE_SCALE = 0.5
CONCENTRATION = 10.0  # a + b of the hierarchical prior's Beta at the hand-over


class LaplaceGenerator(psg.SparseGenerator):
    """The package's generator with a Laplace(0, b) prior on every coordinate (no annealing):
    the variant route of subclassing and overriding :meth:`prior`."""

    def prior(self, slab_weight=None):
        loc = torch.zeros((), dtype=self.prior_state.dtype, device=self.prior_state.device)
        return dist.Laplace(loc, torch.full_like(loc, LAPLACE_SCALE))


def _parts(image_shape, config):
    """``(decoder, likelihood scale, latent size, Annealed)`` from the run's config, on the
    run's device (``config.device``, resolved by the learner)."""
    net, device = config.network, psg.runtime.resolve_device(config.device, error=psg.ConfigError)
    decoder = psg.MLPGenerator(net.latent_dim, image_shape, hidden=net.hidden,
                               input_norm=net.input_norm).to(device)
    sigma = psg.likelihood_scale(net.noise_scale, image_shape)
    return decoder, sigma, net.latent_dim, psg.Annealed(config.build_schedule(), device=device)


def _images(decoder, sigma, x, num_images, prior):
    """What every variant shares: the plate over the images, the code site ``"z"`` drawn from
    ``prior`` and the observed site ``"x"`` (returned)."""
    with pyro.plate("images", x.shape[0] if x is not None else num_images):
        z = pyro.sample("z", prior)
        return pyro.sample("x", dist.Normal(decoder(z), sigma).to_event(3), obs=x)


def _final_weight(annealed):
    w = annealed.schedule(annealed.schedule.end).slab_weight
    return min(max(w, 1e-3), 1 - 1e-3)


def annealed_fn(image_shape, config):
    """The default annealed spike-and-slab generator as a plain Pyro function."""
    decoder, sigma, d, annealed = _parts(image_shape, config)

    def model(x=None, num_images=None):
        pyro.module("decoder", decoder)
        w, slab, spike = annealed
        prior = psg.SpikeAndSlab(w, slab, spike).expand([d]).to_event(1)
        return _images(decoder, sigma, x, num_images, prior)

    return model


def learned_fn(image_shape, config):
    """Per-dimension slab weights learned once the annealing has ended (empirical Bayes), from
    the schedule's final weight; the slab and spike scales stay the schedule's."""
    decoder, sigma, d, annealed = _parts(image_shape, config)
    start = torch.full((d,), _final_weight(annealed), device=annealed.state.device)

    def model(x=None, num_images=None):
        pyro.module("decoder", decoder)
        w, slab, spike = annealed
        learned = pyro.param("slab_weight", start, constraint=constraints.unit_interval)
        w = torch.where(annealed.ended, learned, w)
        return _images(decoder, sigma, x, num_images, psg.SpikeAndSlab(w, slab, spike).to_event(1))

    return model


def hierarchical_fn(image_shape, config):
    """Per-dimension slab weights ``w_j ~ Beta(a, b)``, a global latent inferred with the codes;
    ``(a, b)`` learned once the annealing has ended (until then the schedule's weight)."""
    decoder, sigma, d, annealed = _parts(image_shape, config)
    final = _final_weight(annealed)
    start = torch.tensor([CONCENTRATION * final, CONCENTRATION * (1 - final)],
                         device=annealed.state.device)

    def model(x=None, num_images=None):
        pyro.module("decoder", decoder)
        w0, slab, spike = annealed
        learned = pyro.param("concentration", start, constraint=constraints.positive)
        a, b = torch.where(annealed.ended, learned, start)
        w = pyro.sample("w", dist.Beta(a, b).expand([d]).to_event(1))
        w = torch.where(annealed.ended, w, w0)
        return _images(decoder, sigma, x, num_images, psg.SpikeAndSlab(w, slab, spike).to_event(1))

    return model


def laplace_fn(image_shape, config):
    """A Laplace(0, b) prior on every coordinate, as a plain Pyro function."""
    decoder, sigma, d, annealed = _parts(image_shape, config)
    zero = torch.zeros((), device=annealed.state.device)

    def model(x=None, num_images=None):
        pyro.module("decoder", decoder)
        prior = dist.Laplace(zero, LAPLACE_SCALE).expand([d]).to_event(1)
        return _images(decoder, sigma, x, num_images, prior)

    return model
