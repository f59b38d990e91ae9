"""The generator as a Pyro model: ``z ~ SpikeAndSlab`` (annealed), ``x ~ N(g(z), sigma^2 I)``."""

import math
import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.nn import PyroModule
from torch.distributions import constraints

from . import schedules as schedules_
from .distributions import SpikeAndSlab

LIKELIHOODS = ("normal", "bernoulli")


class _IsotropicNormal(TorchDistribution):
    """``N(loc, scale^2 I)`` over the rightmost ``event_dim`` dims of ``loc`` (the image), with
    one Python number as ``scale``.

    The same distribution as ``Normal(loc, scale).to_event(event_dim)``, computed the way the
    likelihood is used at every Langevin step: torch's ``Normal`` broadcasts the scale to the
    image batch and squares and logs it at every call, and the per-pixel log densities are
    summed only afterwards; here the squares are summed first and the normaliser is added once
    per image. That halves the elementwise work on the image, as much as the network's last
    layer costs.
    """

    arg_constraints = {"loc": constraints.real}
    has_rsample = True

    def __init__(self, loc, scale, event_dim, validate_args=None):
        self.loc = loc
        self._set_constants(float(scale), loc.shape[loc.dim() - event_dim:])
        super().__init__(loc.shape[:loc.dim() - event_dim], self._event,
                         validate_args=validate_args)

    def _set_constants(self, scale, event_shape):
        self.scale = scale
        self._event = torch.Size(event_shape)
        self._inv_scale = 1.0 / scale
        self._log_normalizer = self._event.numel() * (math.log(scale) + 0.5 * math.log(2 * math.pi))

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return constraints.independent(constraints.real, len(self._event))

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_IsotropicNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self._event)
        new._set_constants(self.scale, self._event)
        super(_IsotropicNormal, new).__init__(batch_shape, self._event, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return torch.full_like(self.loc, self.scale**2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc.expand(shape) + eps * self.scale

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        residual = (value - self.loc) * self._inv_scale
        if self._event:
            residual = residual.pow(2).sum(tuple(range(-len(self._event), 0)))
        else:
            residual = residual.pow(2)
        return residual * -0.5 - self._log_normalizer

    def entropy(self):
        per_image = self._log_normalizer + 0.5 * self._event.numel()
        return torch.full(self.batch_shape, per_image, dtype=self.loc.dtype,
                          device=self.loc.device)


class SparseGenerator(PyroModule):
    r"""Top-down generator with a spike-and-slab latent, as a Pyro model.

    Calling ``model(x)`` declares a plate ``"images"`` over the first dimension of
    ``x: [images, C, H, W]``, the latent site ``"z"`` (``[images, latent_dim]``, event dim 1)
    drawn from :meth:`prior`, and the observed site ``"x"`` drawn from :meth:`likelihood`.

    The prior's parameters follow ``schedule`` at the settable integer position
    :attr:`iteration`; every call reads the current position, so the kernel's fast path and
    ``az.from_pyro`` see the same prior as a trace of the model.

    Variant priors: subclass and override :meth:`prior` (return any real-supported
    distribution whose batch shape broadcasts to ``[latent_dim]``); everything else is reused.

    :param network: a generator module mapping ``[..., latent_dim] -> [..., C, H, W]`` and
        exposing ``latent_dim`` and ``image_shape`` (e.g. :class:`~pyro_sparsegen.MLPGenerator`).
    :param schedule: a :class:`~pyro_sparsegen.schedules.Schedule`; ``None`` means a constant
        dense N(0, 1) prior.
    :param float noise_scale: the likelihood's standard deviation ``sigma``.
    :param str likelihood: ``"normal"`` (default) or ``"bernoulli"`` (pixels as probabilities).

    Example::

        >>> model = SparseGenerator(MLPGenerator(16), schedule=schedules.constant(0.1))
        >>> images = model.generate(8)          # [8, 1, 28, 28]
    """

    def __init__(self, network, *, schedule=None, noise_scale=0.3, likelihood="normal"):
        super().__init__()
        for attr in ("latent_dim", "image_shape"):
            if not hasattr(network, attr):
                raise ValueError(f"network must expose {attr!r}")
        if schedule is None:
            schedule = schedules_.dense()
        if not isinstance(schedule, schedules_.Schedule):
            raise ValueError(f"schedule must be a Schedule or None, got {type(schedule).__name__}")
        if not isinstance(noise_scale, numbers.Real) or not noise_scale > 0 or \
                noise_scale == float("inf"):
            raise ValueError(f"noise_scale must be a positive finite number, got {noise_scale!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.network = network
        # Fixed at construction, so a wrapped network (DistributedDataParallel) can stand in.
        self.__dict__["_sizes"] = (int(network.latent_dim), tuple(network.image_shape))
        self.schedule = schedule
        self.noise_scale = float(noise_scale)
        self.likelihood_kind = likelihood
        self._iteration = 0

    @property
    def latent_dim(self):
        return self.__dict__["_sizes"][0]

    @property
    def image_shape(self):
        return self.__dict__["_sizes"][1]

    @property
    def iteration(self):
        """Position on the annealing schedule (training iteration)."""
        return self._iteration

    @iteration.setter
    def iteration(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"iteration must be a non-negative integer, got {value!r}")
        self._iteration = int(value)

    def prior_params(self):
        """The schedule's :class:`~pyro_sparsegen.schedules.PriorParams` at :attr:`iteration`."""
        return self.schedule(self._iteration)

    def _param_like(self):
        """A tensor with the network's dtype and device (the prior's parameters follow it)."""
        for p in self.network.parameters():
            return p
        return torch.empty(())

    def prior(self):
        """The per-coordinate prior of ``z`` at the current iteration (override for variants).

        Cached per iteration, schedule, device and dtype, so the inference loop creates no
        tensors and copies nothing to the device per step."""
        like = self._param_like()
        key = (self._iteration, self.schedule, like.device, like.dtype)
        cached = self.__dict__.get("_prior_cache")
        if cached is None or cached[0] != key:
            params = [torch.as_tensor(v, dtype=like.dtype, device=like.device)
                      for v in self.prior_params()]  # already range-checked by the schedule
            cached = (key, SpikeAndSlab(*params, validate_args=False))
            self.__dict__["_prior_cache"] = cached
        return cached[1]

    def likelihood(self, z):
        """``p(x | z)`` with event shape ``image_shape``; ``z: [..., latent_dim]``."""
        mean = self.network(z)
        event_dim = len(self.image_shape)
        if self.likelihood_kind == "bernoulli":
            base = dist.Bernoulli(probs=mean.clamp(1e-6, 1 - 1e-6), validate_args=False)
            return base.to_event(event_dim)
        return _IsotropicNormal(mean, self.noise_scale, event_dim)

    def _latent_dist(self):
        """The site distribution for one image: event shape ``[latent_dim]``."""
        prior = self.prior()
        d = self.latent_dim
        cached = self.__dict__.get("_latent_cache")
        if cached is not None and cached[0] is prior and cached[1] == d:
            return cached[2]  # the same prior object as last call (prior() caches it)
        if prior.event_shape == torch.Size([d]):
            latent = prior
        elif prior.event_shape != torch.Size():
            raise ValueError(f"prior() must have event shape () or ({d},), "
                             f"got {tuple(prior.event_shape)}")
        else:
            latent = prior.expand(torch.Size([d])).to_event(1)
        self.__dict__["_latent_cache"] = (prior, d, latent)
        return latent

    def _num_images(self, x, num_images):
        if x is not None:
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"x must be a tensor, got {type(x).__name__}")
            if tuple(x.shape[-3:]) != self.image_shape or x.dim() < 4:
                raise ValueError(f"x must have shape [images, {', '.join(map(str, self.image_shape))}]"
                                 f", got {list(x.shape)}")
            if num_images is not None and num_images != x.shape[-4]:
                raise ValueError(f"num_images={num_images} disagrees with x ({x.shape[-4]} images)")
            return x.shape[-4]
        if num_images is None:
            raise ValueError("give x or num_images")
        if isinstance(num_images, bool) or not isinstance(num_images, numbers.Integral) \
                or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        return int(num_images)

    def forward(self, x=None, *, num_images=None):
        n = self._num_images(x, num_images)
        with pyro.plate("images", n, dim=-1):
            z = pyro.sample("z", self._latent_dist())
            return pyro.sample("x", self.likelihood(z), obs=x)

    # -- fast path for ShortRunLangevin: the same distributions, without the effect handlers --
    def log_joint_terms(self, latents, x=None, *, num_images=None):
        """Per-image ``(log p(z), log p(x | z))``, each ``[..., images]``, for
        ``latents = {"z": [..., images, latent_dim]}``; equal to the Pyro trace's site terms."""
        if x is None:
            raise ValueError("log_joint_terms needs observed images x")
        z = latents["z"]
        return self._latent_dist().log_prob(z), self.likelihood(z).log_prob(x)

    def log_prior_terms(self, latents, *args, **kwargs):
        """Per-image ``log p(z)``, ``[..., images]``."""
        return self._latent_dist().log_prob(latents["z"])

    def inclusion_probability(self, z):
        """Posterior slab probability of each coordinate of ``z`` under the current prior
        (for priors with an ``inclusion_probability`` method; others raise
        ``NotImplementedError``)."""
        prior = self.prior()
        if not hasattr(prior, "inclusion_probability"):
            raise NotImplementedError(f"{type(prior).__name__} has no inclusion_probability")
        return prior.inclusion_probability(z)

    @torch.no_grad()
    def generate(self, num_images, *, mean=True):
        """Draw ``num_images`` images from the model: ``(images, z)``. With ``mean=True`` the
        images are ``g(z)`` (the usual way to show samples); otherwise noisy draws of ``x``."""
        n = self._num_images(None, num_images)
        z = self._latent_dist().sample((n,))
        images = self.network(z) if mean else self.likelihood(z).sample()
        return images, z
