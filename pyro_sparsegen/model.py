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
from .distributions import SpikeAndSlab, base_distribution, isotropic_normal_log_prob
from .runtime import forked_rng

LIKELIHOODS = ("normal", "bernoulli")
PRIORS = ("annealed", "learned", "learned-scale", "hierarchical")
LEARNED_WEIGHTS = ("learned", "learned-scale")  # the kinds with per-dimension slab weights
CONCENTRATION = 10.0  # a + b of the hierarchical prior's Beta at the hand-over
#: The smallest learned slab scale, in spike scales (``prior="learned-scale"``).
SLAB_OVER_SPIKE = 2.0


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
        return isotropic_normal_log_prob(value, self.loc, self.scale, len(self._event))

    def entropy(self):
        per_image = self._event.numel() * (math.log(self.scale) + 0.5 * math.log(2 * math.pi)
                                           + 0.5)
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
    :param str prior: ``"annealed"`` (default: the schedule's prior throughout), or learned
        once the annealing has ended: ``"learned"`` (per-dimension slab weights),
        ``"learned-scale"`` (per-dimension slab weights and slab scales; the spike scale stays
        the schedule's) or ``"hierarchical"`` (Beta-distributed weights, learned
        concentrations).

    Example::

        >>> model = SparseGenerator(MLPGenerator(16), schedule=schedules.constant(0.1))
        >>> images = model.generate(8)          # [8, 1, 28, 28]
    """

    def __init__(self, network, *, schedule=None, noise_scale=0.3, likelihood="normal",
                 prior="annealed", handover_iteration=None):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
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
        like = self._param_like()
        # The prior's parameters live in a buffer updated in place when the schedule moves, so
        # the kernel's derived graph (which holds a live reference to it) sees every move.
        self.register_buffer("prior_state", torch.ones(3, dtype=like.dtype, device=like.device),
                             persistent=False)
        self.prior_kind = prior
        self.handover_iteration = None if handover_iteration is None else int(handover_iteration)
        if prior != "annealed":
            # Learned by ABP once the annealing has ended (the hand-over); until then the
            # schedule's weight is used. One graph covers both: the flag selects.
            self.register_buffer("handed_over", torch.tensor(handover_iteration is not None,
                                                             device=like.device))
            d = int(network.latent_dim)
            if prior in LEARNED_WEIGHTS:  # per-dimension slab weights w_j = sigmoid(slab_logit_j)
                self.slab_logit = torch.nn.Parameter(torch.zeros(d, dtype=like.dtype,
                                                                 device=like.device))
                if prior == "learned-scale":  # and slab scales s_j = exp(slab_log_scale_j)
                    self.slab_log_scale = torch.nn.Parameter(torch.zeros(
                        d, dtype=like.dtype, device=like.device))
            else:  # w_j ~ Beta(a, b), a global latent; (log a, log b) learned
                self.log_concentration = torch.nn.Parameter(torch.zeros(
                    2, dtype=like.dtype, device=like.device))
        self._iteration = 0
        self.schedule = schedule
        self.noise_scale = float(noise_scale)
        self.likelihood_kind = likelihood

    @property
    def latent_dim(self):
        return self.__dict__["_sizes"][0]

    @property
    def image_shape(self):
        return self.__dict__["_sizes"][1]

    @property
    def schedule(self):
        """The annealing :class:`~pyro_sparsegen.schedules.Schedule` of the prior."""
        return self.__dict__["_schedule"]

    @schedule.setter
    def schedule(self, value):
        if not isinstance(value, schedules_.Schedule):
            raise ValueError(f"schedule must be a Schedule, got {type(value).__name__}")
        self.__dict__["_schedule"] = value
        self._refresh_prior()

    @property
    def iteration(self):
        """Position on the annealing schedule (training iteration)."""
        return self._iteration

    @iteration.setter
    def iteration(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"iteration must be a non-negative integer, got {value!r}")
        self._iteration = int(value)
        self._refresh_prior()

    def _apply(self, fn, *args, **kwargs):
        # .to(dtype) converts the buffer's values; refill it from the schedule in the new dtype
        out = super()._apply(fn, *args, **kwargs)
        self._refresh_prior()
        return out

    def _refresh_prior(self):
        state = self.__dict__.get("_buffers", {}).get("prior_state")
        if state is None or "_schedule" not in self.__dict__:
            return
        with torch.no_grad():
            for i, v in enumerate(self.prior_params()):
                state[i].fill_(v)  # a kernel launch with a scalar: no host-device copy
            if self.prior_kind != "annealed" and self.handover_iteration is None and \
                    self._iteration >= self.schedule.end:
                self._hand_over()

    def _hand_over(self):
        """Start learning the slab weights (and scales), from the schedule's final ones."""
        end = self.schedule(self.schedule.end)
        final = min(max(end.slab_weight, 1e-3), 1 - 1e-3)
        if self.prior_kind in LEARNED_WEIGHTS:
            self.slab_logit.fill_(math.log(final / (1 - final)))
            if self.prior_kind == "learned-scale":
                self.slab_log_scale.fill_(math.log(end.slab_scale))
        else:
            self.log_concentration.copy_(torch.tensor(
                [math.log(CONCENTRATION * final), math.log(CONCENTRATION * (1 - final))]))
        self.handed_over.fill_(True)
        self.handover_iteration = self._iteration

    def checkpoint_options(self):
        """Constructor options besides the network, schedule, noise scale and likelihood."""
        return {"prior": self.prior_kind, "handover_iteration": self.handover_iteration}

    def prior_params(self):
        """The schedule's :class:`~pyro_sparsegen.schedules.PriorParams` at :attr:`iteration`."""
        return self.schedule(self._iteration)

    def _param_like(self):
        """A tensor with the network's dtype and device (the prior's parameters follow it)."""
        for p in self.network.parameters():
            return p
        return torch.empty(())

    def prior(self, slab_weight=None):
        """The per-coordinate prior of ``z`` at the current iteration (override for variants):
        a :class:`~pyro_sparsegen.SpikeAndSlab` on views of the ``prior_state`` buffer; with
        ``prior="learned"`` the learned weights once handed over (``"learned-scale"``: the
        learned weights and slab scales, ``[latent_dim]`` each); with ``"hierarchical"``
        ``slab_weight`` (the global latent ``w``, ``[latent_dim]``) once handed over."""
        state = self.prior_state
        if self.prior_kind in LEARNED_WEIGHTS:
            weight = torch.where(self.handed_over, torch.sigmoid(self.slab_logit), state[0])
            # a learned slab scale stays above the spike's: below it the two components would
            # trade roles (the inclusion probability and the crossing move would invert)
            scale = state[1] if self.prior_kind == "learned" else torch.where(
                self.handed_over, torch.maximum(self.slab_log_scale.exp(),
                                                state[2] * SLAB_OVER_SPIKE), state[1])
            return SpikeAndSlab(weight, scale, state[2], validate_args=False)
        if self.prior_kind == "hierarchical":
            if slab_weight is None:  # outside the model: the hyperprior's mean
                a, b = self.log_concentration.exp()
                slab_weight = (a / (a + b)).expand(self.latent_dim)
            return SpikeAndSlab(torch.where(self.handed_over, slab_weight, state[0]), state[1],
                                state[2], validate_args=False)
        cached = self.__dict__.get("_prior_cache")
        if cached is None or cached[0] is not state:
            cached = (state, SpikeAndSlab(state[0], state[1], state[2], validate_args=False))
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

    def slab_weight_prior(self):
        """``Beta(a, b)`` of the hierarchical prior's per-dimension weights ``w``."""
        a, b = self.log_concentration.exp()
        return dist.Beta(a, b, validate_args=False).expand([self.latent_dim]).to_event(1)

    def _latent_dist(self, slab_weight=None):
        """The site distribution for one image: event shape ``[latent_dim]``."""
        prior = self.prior() if slab_weight is None else self.prior(slab_weight)
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
                shape = ", ".join(map(str, self.image_shape))
                raise ValueError(f"x must have shape [images, {shape}]"
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
        if self.prior_kind == "hierarchical":
            latent = self._latent_dist(pyro.sample("w", self.slab_weight_prior()))
        else:
            latent = self._latent_dist()
        with pyro.plate("images", n, dim=-1):
            z = pyro.sample("z", latent)
            return pyro.sample("x", self.likelihood(z), obs=x)

    code_site = "z"

    def local_priors(self):
        """``{"z": the site distribution of z}`` at the current iteration, without running the
        model: the hook :func:`~pyro_sparsegen.abp.sparsified` asks (when the kernel's target
        has no global latents) instead of evaluating the model once more per step."""
        return {"z": self._latent_dist()}

    def decode(self, z):
        """The likelihood's mean ``g(z)``: ``z: [..., latent_dim] -> [..., C, H, W]``."""
        return self.network(z)

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
        """Draw ``num_images`` images from the model's prior: ``(images, z)``. With
        ``mean=True`` the images are ``g(z)`` (the usual way to show samples); otherwise noisy
        draws of ``x``."""
        n = self._num_images(None, num_images)
        trace = pyro.poutine.trace(self).get_trace(None, num_images=n)
        z = trace.nodes["z"]["value"]
        return (self.network(z) if mean else trace.nodes["x"]["value"]), z


class FunctionModel:
    """A plain Pyro function that follows the generator convention, with the calls the package
    makes on a generator (:meth:`decode`, :meth:`generate`, :meth:`inclusion_probability`).

    The convention: ``fn(x)`` with images ``x: [images, C, H, W]``, or ``fn(None,
    num_images=n)`` to generate; a plate over the images holding the per-image code site
    (``"z"`` unless the function has a ``code_site`` attribute) and the observed site ``"x"``.
    Calling a ``FunctionModel`` calls ``fn``: it is the Pyro model the kernel and
    :class:`~pyro_sparsegen.ABP` run.

    :param fn: the Pyro function.
    :param image_shape: ``(C, H, W)``.
    :param str factory: ``"MODULE:NAME"`` of the factory that built it (checkpoints record it).
    :param schedule: the run's annealing :class:`~pyro_sparsegen.schedules.Schedule` (what
        the function reads through :class:`~pyro_sparsegen.schedules.Annealed`), if any.
    """

    def __init__(self, fn, image_shape, *, factory=None, code_site=None, schedule=None):
        if not callable(fn):
            raise ValueError(f"a model must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.image_shape = tuple(image_shape)
        self.factory = factory
        if schedule is not None:
            self.schedule = schedule
        self.code_site = code_site or getattr(fn, "code_site", "z")
        self._latent_dim = None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def _trace(self, num_images, latents=None):

        model = self.fn if latents is None else pyro.poutine.condition(self.fn, data=latents)
        with forked_rng(latents), pyro.validation_enabled(False):
            return pyro.poutine.trace(model).get_trace(None, num_images=num_images)

    def _site(self, trace, name, role):
        if name not in trace.nodes:
            sites = ", ".join(n for n, s in trace.nodes.items() if s["type"] == "sample")
            raise ValueError(f"the model has no {role} site {name!r} (sites: {sites})")
        return trace.nodes[name]

    @property
    def latent_dim(self):
        """The code's size (from one generation trace)."""
        if self._latent_dim is None:
            site = self._site(self._trace(1), self.code_site, "code")
            self._latent_dim = int(site["value"].shape[-1])
        return self._latent_dim

    @property
    def device(self):
        """The device of the code site (from one generation trace)."""
        return self._site(self._trace(1), self.code_site, "code")["value"].device

    @torch.no_grad()
    def decode(self, z):
        """The observed site's mean with the code site set to ``z: [n, latent_dim]``."""
        site = self._site(self._trace(z.shape[0], {self.code_site: z}), "x", "observed")
        return site["fn"].mean

    @torch.no_grad()
    def generate(self, num_images, *, mean=True):
        """``(images, z)`` drawn from the model (images: the observed site's mean, or draws)."""
        with pyro.validation_enabled(False):
            trace = pyro.poutine.trace(self.fn).get_trace(None, num_images=num_images)
        z = self._site(trace, self.code_site, "code")["value"]
        x = self._site(trace, "x", "observed")
        return (x["fn"].mean if mean else x["value"]), z

    @torch.no_grad()
    def inclusion_probability(self, z):
        """The code site's prior inclusion probability at ``z`` (raises
        ``NotImplementedError`` for priors without one)."""

        site = self._site(self._trace(z.shape[0], {self.code_site: z}), self.code_site, "code")
        fn = base_distribution(site["fn"])
        if not hasattr(fn, "inclusion_probability"):
            raise NotImplementedError(f"{type(fn).__name__} has no inclusion_probability")
        return fn.inclusion_probability(z)

    def prior_params(self):
        """The run's schedule at the learner's position
        (:func:`~pyro_sparsegen.schedules.current_iteration`)."""
        if not hasattr(self, "schedule"):
            raise AttributeError("this model has no schedule")
        return self.schedule(schedules_.current_iteration())

    def eval(self):
        return self

    def train(self, mode=True):
        return self
