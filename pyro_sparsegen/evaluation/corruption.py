r"""Inference that models the corruption: a censored Gaussian likelihood for clipped noise.

A noisy image clipped to [0, 1] is not Gaussian around the clean image: where the noise
pushes a pixel below 0 or above 1 it is recorded *at* the bound (half of a black background
at any noise level). :class:`CensoredNormal` is the likelihood of such an observation,

.. math::
    p(y \mid z) = \prod_i \begin{cases}
        \Phi\bigl((l - g_i(z)) / s\bigr) & y_i \le l \\
        \mathcal N(y_i; g_i(z), s^2) & l < y_i < h \\
        1 - \Phi\bigl((h - g_i(z)) / s\bigr) & y_i \ge h,
    \end{cases}

with ``s`` the model's own likelihood scale. :func:`censored` returns a copy of an ABP model
whose ``likelihood`` is this distribution (a Pyro likelihood: the ``"x"`` site of the model and
its fast path both use it), so ``psg.make_inference(censored(model), config)`` runs the model's own
short Langevin inference against the corruption it will see. A labelled variant of the
clipped protocol, for every ABP model alike; the amortised baselines have no such inference.

:func:`noise_inflated` is the same kind of copy for unclipped Gaussian noise: a noisy image
``y = x + N(0, sigma^2)`` of an image ``x ~ N(g(z), s^2)`` is ``N(g(z), s^2 + sigma^2)``, so
the copy's likelihood scale is ``sqrt(s^2 + sigma^2)`` (the Bayes denoiser,
:func:`~pyro_sparsegen.evaluation.bayes_denoise`).
"""

import copy
import functools
import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class CensoredNormal(TorchDistribution):
    """``N(loc, scale^2)`` observed through clipping to ``[low, high]``, independent over the
    rightmost ``event_dim`` dimensions (the image).

    :meth:`log_prob` is the log density inside ``(low, high)`` and the log tail mass at a
    bound (a density with respect to Lebesgue measure plus point masses at the bounds);
    :meth:`sample` clips a normal draw.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc, scale, low=0.0, high=1.0, event_dim=0, validate_args=None):
        if not low < high:
            raise ValueError(f"low must be below high, got {low!r}, {high!r}")
        self.loc = loc
        self.scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        self.low, self.high, self._event_dim = float(low), float(high), int(event_dim)
        shape = loc.shape
        super().__init__(shape[:len(shape) - event_dim], shape[len(shape) - event_dim:],
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return constraints.independent(constraints.interval(self.low, self.high),
                                       self._event_dim)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(CensoredNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale, new.low, new.high, new._event_dim = self.scale, self.low, self.high, \
            self._event_dim
        super(CensoredNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.loc  # of the uncensored normal (the generator's image)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        standard = (value - self.loc) / self.scale
        inside = -0.5 * standard**2 - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)
        below = torch.special.log_ndtr((self.low - self.loc) / self.scale)
        above = torch.special.log_ndtr((self.loc - self.high) / self.scale)
        out = torch.where(value <= self.low, below, torch.where(value >= self.high, above,
                                                                 inside))
        return out.sum(tuple(range(-self._event_dim, 0))) if self._event_dim else out

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return (self.loc.expand(shape) + eps * self.scale).clamp(self.low, self.high)


@functools.cache
def _censored_class(cls):
    def likelihood(self, z):
        """``p(x | z)``: :class:`CensoredNormal` around ``g(z)`` at the model's scale."""
        low, high = self.censor_bounds
        return CensoredNormal(self.network(z), self.noise_scale, low, high,
                              event_dim=len(self.image_shape))

    return type(cls)(f"Censored{cls.__name__}", (cls,), {
        "likelihood": likelihood, "__module__": __name__,
        "__doc__": f"{cls.__name__} observed through clipping (a censored likelihood)."})


def censored(model, low=0.0, high=1.0):
    """A copy of ``model`` (a :class:`~pyro_sparsegen.SparseGenerator` with a normal
    likelihood) whose likelihood is :class:`CensoredNormal` on ``[low, high]`` at the model's
    own scale; ``model`` itself is unchanged. Encode with ``psg.make_inference(copy, config)``."""
    if getattr(model, "likelihood_kind", None) != "normal" or hasattr(model, "encode"):
        raise ValueError("censored() needs an ABP model with a normal likelihood")
    clone = copy.deepcopy(model)
    clone.__class__ = _censored_class(type(model))
    clone.censor_bounds = (float(low), float(high))
    return clone


def noise_inflated(model, sigma):
    """A copy of ``model`` (a :class:`~pyro_sparsegen.SparseGenerator` with a normal
    likelihood: the sparse or a dense ABP model) whose likelihood scale is ``sqrt(s^2 +
    sigma^2)``, ``s`` the model's own: the law of its image seen through added noise
    ``N(0, sigma^2)``. ``model`` itself is unchanged; ``sigma = 0`` gives an equal copy."""
    if getattr(model, "likelihood_kind", None) != "normal" or hasattr(model, "encode") or \
            not hasattr(model, "noise_scale"):
        raise ValueError(f"noise_inflated() needs an ABP model with a normal likelihood, got "
                         f"{type(model).__name__}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    clone = copy.deepcopy(model)
    clone.noise_scale = math.sqrt(float(model.noise_scale) ** 2 + sigma ** 2)
    return clone
