"""The spike-and-slab prior as a Pyro distribution."""

import math
import numbers

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

ACTIVE_THRESHOLD = 0.2
"""A code coordinate is *active* by magnitude when ``|z_j| > ACTIVE_THRESHOLD`` (the authors'
threshold); every default ``threshold=`` of the package is this constant."""
INCLUSION_CUTOFF = 0.5
"""A coordinate is *included* (its slab gate on) when its inclusion probability is
``>= INCLUSION_CUTOFF``; sparsifying keeps exactly these coordinates."""


def is_included(probability):
    """The inclusion decision for inclusion probabilities (a NaN is never included)."""
    return probability >= INCLUSION_CUTOFF


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


def _curvature(r, inv_slab, inv_spike):
    """``r / s_slab^2 + (1 - r) / s_spike^2``."""
    k_slab, k_spike = inv_slab * inv_slab, inv_spike * inv_spike
    return torch.addcmul(k_spike, r, k_slab - k_spike)


def _components(value, a_slab, a_spike, inv_slab, inv_spike):
    """Joint log densities of (value, slab) and (value, spike) from :meth:`SpikeAndSlab.
    _constants`: ``a - (value / s)^2 / 2`` (``(value / s)^2``, not ``value^2 / s^2``: a tiny
    spike's ``s^2`` underflows to 0 in float32 below ~1e-19, which made the density NaN at 0)."""
    t_slab, t_spike = value * inv_slab, value * inv_spike
    return (torch.addcmul(a_slab, t_slab, t_slab, value=-0.5),
            torch.addcmul(a_spike, t_spike, t_spike, value=-0.5))


class _LogProbFixedParams(torch.autograd.Function):
    """The spike-and-slab log density with its gradient in closed form,
    ``d/dz log p(z) = -kappa(z) z`` (for parameters that need no gradient): two tensor
    operations instead of autograd's eight through ``logaddexp``."""

    @staticmethod
    def forward(ctx, value, a_slab, a_spike, inv_slab, inv_spike):
        slab, spike = _components(value, a_slab, a_spike, inv_slab, inv_spike)
        ctx.save_for_backward(value, torch.sigmoid(slab - spike), inv_slab, inv_spike)
        return torch.logaddexp(slab, spike)

    @staticmethod
    def backward(ctx, grad):
        value, r, inv_slab, inv_spike = ctx.saved_tensors
        return -grad * _curvature(r, inv_slab, inv_spike) * value, None, None, None, None


class _IsotropicLogProb(torch.autograd.Function):
    """``-c * sum (value - loc)^2 - log Z`` over the last ``dims`` dims, with its gradient in
    closed form: one tensor operation on an image batch instead of autograd's four."""

    @staticmethod
    def forward(ctx, value, loc, c, log_normalizer, dims):
        residual = value - loc
        squares = residual * residual
        out = (squares.sum(tuple(range(-dims, 0))) if dims else squares) * -c - log_normalizer
        ctx.save_for_backward(residual)
        ctx.c, ctx.dims = c, dims
        return out

    @staticmethod
    def backward(ctx, grad):
        (residual,) = ctx.saved_tensors
        scaled = (grad * (2 * ctx.c)).reshape(grad.shape + (1,) * ctx.dims) * residual
        return (-scaled if ctx.needs_input_grad[0] else None,
                scaled if ctx.needs_input_grad[1] else None, None, None, None)


def isotropic_normal_log_prob(value, loc, scale, dims):
    """``log N(value; loc, scale^2 I)`` summed over the last ``dims`` dims, for one ``scale``
    (a number, or a 0-dim tensor needing no gradient) shared by every element."""
    value, loc = torch.broadcast_tensors(value, loc)
    count = math.prod(value.shape[value.dim() - dims:]) if dims else 1
    if isinstance(scale, torch.Tensor):
        log_normalizer = count * (scale.log() + _HALF_LOG_2PI)
        c = 0.5 * scale.reciprocal() ** 2
    else:
        log_normalizer = count * (math.log(scale) + _HALF_LOG_2PI)
        c = 0.5 / (scale * scale)
    return _IsotropicLogProb.apply(value, loc, c, log_normalizer, dims)


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
        # The parameters as given (before any expand): the per-call constants are computed on
        # them, not on an image batch's worth of copies.
        self._params = (self.slab_weight, self.slab_scale, self.spike_scale)
        # Already validated above; skip torch's second pass.
        super().__init__(self.slab_weight.shape, validate_args=False)
        self._validate_args = validate

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        new.slab_weight = self.slab_weight.expand(batch_shape)
        new.slab_scale = self.slab_scale.expand(batch_shape)
        new.spike_scale = self.spike_scale.expand(batch_shape)
        new._params = self._params
        super(SpikeAndSlab, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _constants(self):
        """``(log w - log s_slab - log sqrt(2 pi), log(1 - w) - log s_spike - ..., 1 / s_slab,
        1 / s_spike)`` of the unexpanded parameters (read at every call: the parameters may
        be live tensors that change in place)."""
        w, slab, spike = self._params
        inv_slab, inv_spike = slab.reciprocal(), spike.reciprocal()
        # log(w) and log1p(-w) are -inf at the ends of [0, 1]; logaddexp handles that.
        return (w.log() + inv_slab.log() - _HALF_LOG_2PI,
                torch.log1p(-w) + inv_spike.log() - _HALF_LOG_2PI, inv_slab, inv_spike)

    def _component_log_probs(self, value):
        """Joint log densities of (value, slab) and (value, spike)."""
        return _components(value, *self._constants())

    def _full(self, out, value):
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return out if out.shape == shape else out.expand(shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if not any(isinstance(p, torch.Tensor) and p.requires_grad for p in self._params):
            # the gradient in closed form, -kappa(z) z, shares its terms with the curvature
            return self._full(_LogProbFixedParams.apply(value, *self._constants()), value)
        slab, spike = self._component_log_probs(value)
        return self._full(torch.logaddexp(slab, spike), value)

    def inclusion_probability(self, value):
        """Posterior probability that ``value`` was drawn from the slab (Bayes' rule); NaN
        where ``value`` is NaN (never a made-up 0.5, which would count as active)."""
        slab, spike = self._component_log_probs(value)
        return self._full(torch.sigmoid(slab - spike), value)

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
        slab, spike = self._component_log_probs(value)
        _, _, inv_slab, inv_spike = self._constants()
        kappa = _curvature(torch.sigmoid(slab - spike), inv_slab, inv_spike)
        return self._full(kappa.nan_to_num(nan=0.0, posinf=torch.finfo(kappa.dtype).max), value)

    def component_scales(self):
        """``(spike scale, slab scale)`` broadcast to the batch shape."""
        return self.spike_scale, self.slab_scale


def base_distribution(fn):
    """The innermost distribution under ``Independent`` / ``Expanded`` / ``Masked`` wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn
