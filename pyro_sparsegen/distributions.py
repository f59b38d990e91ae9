"""The spike-and-slab prior as a Pyro distribution."""

import math
import numbers

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _check_number(name, value, low, high, *, closed_low):
    """Validate a Python-number parameter without touching a device."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    bad_low = value < low if closed_low else value <= low
    if bad_low or value > high:
        interval = f"[{low}, {high}]" if closed_low else f"({low}, {high}]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")


def _check_tensor(name, value, low, high, *, closed_low):
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite, got {value}")
    bad_low = (value < low) if closed_low else (value <= low)
    if bad_low.any() or (value > high).any():
        interval = f"[{low}, {high}]" if closed_low else f"({low}, {high}]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")


class SpikeAndSlab(TorchDistribution):
    r"""
    Zero-centred spike-and-slab mixture, the marginal over a Bernoulli gate:

    .. math::
        p(z) = w\,\mathcal N(z; 0, s_\text{slab}^2) + (1 - w)\,\mathcal N(z; 0, s_\text{spike}^2)

    The gate is marginalised, so the site is continuous with real support and works as a latent
    site under :func:`pyro.infer.mcmc.util.initialize_model` (unlike ``MixtureSameFamily``).

    :param slab_weight: slab (inclusion) probability ``w`` in ``[0, 1]``.
    :param slab_scale: standard deviation of the slab, positive.
    :param spike_scale: standard deviation of the spike, positive.

    Example::

        >>> d = SpikeAndSlab(0.1, 1.0, 0.05)
        >>> z = d.sample((1000,))
        >>> d.inclusion_probability(torch.tensor([0.0, 1.0]))  # doctest: +SKIP
        tensor([0.0056, 1.0000])
    """

    arg_constraints = {
        "slab_weight": constraints.unit_interval,
        "slab_scale": constraints.positive,
        "spike_scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = False
    #: A zero-centred scale mixture of normals: ShortRunLangevin's semi-implicit step treats
    #: its pull towards zero implicitly, and its crossing move jumps between the components.
    scale_mixture = True

    def __init__(self, slab_weight, slab_scale, spike_scale, *, validate_args=None):
        # Python numbers (the schedule's output) are checked for free; tensors only when
        # validation is on, since checking them forces a host-device sync.
        checks = (("slab_weight", slab_weight, 0.0, 1.0, True),
                  ("slab_scale", slab_scale, 0.0, math.inf, False),
                  ("spike_scale", spike_scale, 0.0, math.inf, False))
        validate = validate_args if validate_args is not None else self._validate_args
        for name, value, low, high, closed in checks:
            if isinstance(value, numbers.Number):
                _check_number(name, value, low, high, closed_low=closed)
            elif validate and isinstance(value, torch.Tensor):
                _check_tensor(name, value.detach(), low, high, closed_low=closed)
        self.slab_weight, self.slab_scale, self.spike_scale = broadcast_all(
            slab_weight, slab_scale, spike_scale
        )
        # Already validated above; skip torch's second pass.
        super().__init__(self.slab_weight.shape, validate_args=False)
        self._validate_args = validate

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        new.slab_weight = self.slab_weight.expand(batch_shape)
        new.slab_scale = self.slab_scale.expand(batch_shape)
        new.spike_scale = self.spike_scale.expand(batch_shape)
        super(SpikeAndSlab, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _component_log_probs(self, value):
        """Joint log densities of (value, slab) and (value, spike)."""
        # (value / scale)**2, not value**2 / scale**2: a tiny spike's scale**2 underflows to 0
        # (float32 below ~1e-19), which made the density NaN at 0.
        slab = -0.5 * (value / self.slab_scale) ** 2 - self.slab_scale.log() - _HALF_LOG_2PI
        spike = -0.5 * (value / self.spike_scale) ** 2 - self.spike_scale.log() - _HALF_LOG_2PI
        # log(w) and log1p(-w) are -inf at the ends of [0, 1]; logaddexp handles that.
        return slab + self.slab_weight.log(), spike + torch.log1p(-self.slab_weight)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        slab, spike = self._component_log_probs(value)
        return torch.logaddexp(slab, spike)

    def inclusion_probability(self, value):
        """Posterior probability that ``value`` was drawn from the slab (Bayes' rule); NaN
        where ``value`` is NaN (never a made-up 0.5, which would count as active)."""
        slab, spike = self._component_log_probs(value)
        return torch.sigmoid(slab - spike)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            gate = torch.bernoulli(self.slab_weight.expand(shape))
            scale = torch.where(gate.bool(), self.slab_scale.expand(shape),
                                self.spike_scale.expand(shape))
            return scale * torch.randn(shape, dtype=scale.dtype, device=scale.device)

    @property
    def mean(self):
        return torch.zeros_like(self.slab_weight)

    @property
    def mode(self):
        return torch.zeros_like(self.slab_weight)

    @property
    def variance(self):
        w = self.slab_weight
        return w * self.slab_scale**2 + (1 - w) * self.spike_scale**2

    def secant_curvature(self, value):
        """``-d/dz log p(z) / z``: each component's precision weighted by its
        responsibility, in closed form (finite for any spike)."""
        r = self.inclusion_probability(value)
        kappa = r * self.slab_scale.pow(-2) + (1 - r) * self.spike_scale.pow(-2)
        return kappa.nan_to_num(nan=0.0, posinf=torch.finfo(kappa.dtype).max)

    def component_scales(self):
        """``(spike scale, slab scale)`` broadcast to the batch shape."""
        return self.spike_scale, self.slab_scale
