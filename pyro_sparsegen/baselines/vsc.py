r"""Variational Sparse Coding (Tonolini, Jensen & Murray-Smith, UAI 2019), fixed-prior form.

Prior and recognition model are spike-and-slab with a point mass at zero:

.. math::
    p(z) = \prod_j [\alpha\,\mathcal N(z_j; 0, 1) + (1 - \alpha)\,\delta_0(z_j)],

    q(z | x) = \prod_j [\gamma_j\,\mathcal N(z_j; \mu_j, \sigma_j^2)
    + (1 - \gamma_j)\,\delta_0(z_j)]

and the ELBO is ``E_q[log p(x | z)] - KL(q || p)`` with the exact KL (the point masses cancel)

.. math::
    \mathrm{KL} = \sum_j \gamma_j \mathrm{KL}(\mathcal N(\mu_j, \sigma_j^2) \| \mathcal N(0, 1))
    + \gamma_j \log\frac{\gamma_j}{\alpha} + (1 - \gamma_j) \log\frac{1 - \gamma_j}{1 - \alpha}.

The likelihood term uses one reparameterised sample with the spike relaxed by a sigmoid,
``z = sigmoid(c (u + gamma - 1)) * (mu + sigma eps)``, ``u ~ U(0, 1)``, whose sharpness ``c``
rises during training. Spike warm-up: for the first iterations the slab's mean and
log-scale are multiplied by ``lambda`` rising 0 -> 1, so the decoder first learns from
which coordinates are on, then from their values.

For the Langevin analyses the Pyro model's prior is the same mixture with the point mass
relaxed to a narrow Gaussian, :class:`~pyro_sparsegen.SpikeAndSlab` ``(alpha, 1, spike_scale)``.
"""

import numbers

import pyro
import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, lazy_property
from torch.nn import functional as F

from .. import schedules
from ..distributions import SpikeAndSlab, is_included
from .encoders import AmortizedGenerator


class RelaxedSpikeAndSlab(TorchDistribution):
    r"""``q(z) = prod_j [gamma_j N(mu_j, sigma_j^2) + (1 - gamma_j) delta_0]``, event dim 1.

    :meth:`rsample` is the relaxed reparameterised draw
    ``sigmoid(c (u + gamma - 1)) * (mu + sigma eps)``; :meth:`sample` draws the gates exactly
    (exact zeros). The point mass has no Lebesgue density, so :meth:`log_prob` raises; use
    :meth:`kl_to_spike_and_slab` (or :class:`VSCLoss`).

    :param loc: slab means ``mu``, ``[..., latent]``.
    :param scale: slab standard deviations ``sigma``, positive.
    :param slab_probs: ``gamma`` in [0, 1] ...
    :param slab_logits: ... or its logit (give exactly one; logits keep the KL's gradient
        finite where ``gamma`` rounds to 0 or 1).
    :param float sharpness: ``c`` of the relaxed gate.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "slab_probs": constraints.unit_interval,
                       "slab_logits": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, slab_probs=None, *, slab_logits=None, sharpness=200.0,
                 validate_args=None):
        if (slab_probs is None) == (slab_logits is None):
            raise ValueError("give exactly one of slab_probs and slab_logits")
        if isinstance(sharpness, bool) or not isinstance(sharpness, numbers.Real) or \
                not 0 < sharpness < float("inf"):
            raise ValueError(f"sharpness must be a positive finite number, got {sharpness!r}")
        gate = slab_probs if slab_logits is None else slab_logits
        self.loc, self.scale, gate = broadcast_all(loc, scale, gate)
        if self.loc.dim() < 1:
            raise ValueError("loc, scale and the slab probabilities need a latent dimension")
        if slab_logits is None:
            self.slab_probs = gate
        else:
            self.slab_logits = gate
        self.sharpness = float(sharpness)
        shape = self.loc.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    @lazy_property
    def slab_probs(self):
        return torch.sigmoid(self.slab_logits)

    @lazy_property
    def slab_logits(self):
        return torch.logit(self.slab_probs)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(RelaxedSpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        for name in ("slab_probs", "slab_logits"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(shape))
        new.loc = self.loc.expand(shape)
        new.scale = self.scale.expand(shape)
        new.sharpness = self.sharpness
        super(RelaxedSpikeAndSlab, new).__init__(batch_shape, self.event_shape,
                                                 validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _noise(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        like = self.loc
        return (torch.rand(shape, dtype=like.dtype, device=like.device),
                torch.randn(shape, dtype=like.dtype, device=like.device))

    def rsample(self, sample_shape=torch.Size()):
        u, eps = self._noise(sample_shape)
        gate = torch.sigmoid(self.sharpness * (u + self.slab_probs - 1))
        return gate * (self.loc + self.scale * eps)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            u, eps = self._noise(sample_shape)
            slab = self.loc + self.scale * eps
            return torch.where(u < self.slab_probs, slab, torch.zeros_like(slab))

    def log_prob(self, value):
        raise NotImplementedError("a spike-and-slab with a point mass has no density; use "
                                  "kl_to_spike_and_slab (VSCLoss)")

    @property
    def mean(self):
        return self.slab_probs * self.loc

    @property
    def variance(self):
        g = self.slab_probs
        return g * (self.scale**2 + self.loc**2) - (g * self.loc) ** 2

    def kl_to_spike_and_slab(self, slab_weight, slab_scale=1.0):
        """``KL(q || p)`` summed over the event, ``[batch]``, for
        ``p(z_j) = slab_weight N(0, slab_scale^2) + (1 - slab_weight) delta_0``."""
        g, mu, sigma = self.slab_probs, self.loc, self.scale
        alpha, s = broadcast_all(torch.as_tensor(slab_weight, dtype=mu.dtype, device=mu.device),
                                 torch.as_tensor(slab_scale, dtype=mu.dtype, device=mu.device))
        slab = s.log() - sigma.log() + (sigma**2 + mu**2) / (2 * s**2) - 0.5
        if "slab_logits" in self.__dict__:  # finite gradients even where gamma rounds to 0 or 1
            log_g, log_not_g = F.logsigmoid(self.slab_logits), F.logsigmoid(-self.slab_logits)
            entropy = g * log_g + (1 - g) * log_not_g
        else:
            entropy = torch.special.xlogy(g, g) + torch.special.xlogy(1 - g, 1 - g)
        gate = entropy - g * alpha.log() - (1 - g) * torch.log1p(-alpha)
        return (g * slab + gate).sum(-1)


def _spike_and_slab(fn):
    while not isinstance(fn, SpikeAndSlab) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    if not isinstance(fn, SpikeAndSlab):
        raise ValueError(f"VSCLoss needs a SpikeAndSlab prior, got {type(fn).__name__}")
    return fn


class VSCLoss:
    """The negative VSC ELBO, summed over images: ``-log p(x | z)`` at one relaxed sample
    from the guide, plus the exact KL of every :class:`RelaxedSpikeAndSlab` guide site to the
    model's :class:`~pyro_sparsegen.SpikeAndSlab` prior site with its spike collapsed to a
    point mass (the prior's ``slab_weight`` is ``alpha``, its ``slab_scale`` the slab's).

    A callable ``loss(model, guide, *args, **kwargs)``, usable as ``pyro.infer.SVI``'s loss.
    """

    def __call__(self, model, guide, *args, **kwargs):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"])
        loss = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                loss = loss - site["log_prob_sum"]
                continue
            q_site = guide_trace.nodes.get(name)
            if q_site is None or not isinstance(q_site["fn"], RelaxedSpikeAndSlab):
                raise ValueError(f"VSCLoss needs a RelaxedSpikeAndSlab guide site {name!r}")
            prior = _spike_and_slab(site["fn"])
            kl = q_site["fn"].kl_to_spike_and_slab(prior.slab_weight, prior.slab_scale)
            loss = loss + scale_and_mask(kl, q_site["scale"], q_site["mask"]).sum()
        return loss


class VSC(AmortizedGenerator):
    """Variational sparse coding with the package's generator as decoder.

    :param network: a generator network (e.g. :class:`~pyro_sparsegen.MLPGenerator`).
    :param float alpha: prior slab probability (sparsity), in (0, 1).
    :param float noise_scale: the likelihood's standard deviation.
    :param str likelihood: ``"normal"`` or ``"bernoulli"``.
    :param encoder_hidden: hidden widths of the encoder MLP.
    :param float c_start: sharpness of the relaxed gate at iteration 0 ...
    :param float c_end: ... rising linearly to this at ``anneal_iterations``.
    :param int warmup_iterations: spike warm-up length (``lambda`` rises 0 -> 1).
    :param int anneal_iterations: iterations over which ``c`` rises.
    :param float spike_scale: width of the Gaussian standing in for the point mass in the Pyro
        model's prior (Langevin analyses, ``log_joint_terms``, inclusion probabilities).

    :meth:`encode` gives ``mu * 1[gamma >= 0.5]`` (exact zeros); :meth:`inclusion_probability`
    is the model prior's (inherited): ~0 at an exact zero, ~1 once ``|z|`` leaves the narrow
    spike, so on encoded codes it agrees with the gates.

    Example::

        >>> vsc = VSC(MLPGenerator(100), alpha=0.01, warmup_iterations=500)
        >>> svi = pyro.infer.SVI(vsc, vsc.guide, pyro.optim.Adam({"lr": 1e-3}), loss=vsc.loss())
        >>> svi.step(images); vsc.iteration += 1          # the iteration drives c and lambda
    """

    heads = 3

    def __init__(self, network, *, alpha=0.01, noise_scale=0.3, likelihood="normal",
                 encoder_hidden=(400,), c_start=50.0, c_end=200.0, warmup_iterations=1000,
                 anneal_iterations=10000, spike_scale=0.01):
        for name, value in (("c_start", c_start), ("c_end", c_end),
                            ("spike_scale", spike_scale)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                    not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        for name, value in (("warmup_iterations", warmup_iterations),
                            ("anneal_iterations", anneal_iterations)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        super().__init__(network, schedule=schedules.constant(float(alpha), 1.0,
                                                              float(spike_scale)),
                         noise_scale=noise_scale, likelihood=likelihood,
                         encoder_hidden=encoder_hidden)
        self.alpha, self.spike_scale = float(alpha), float(spike_scale)
        self.c_start, self.c_end = float(c_start), float(c_end)
        self.warmup_iterations, self.anneal_iterations = int(warmup_iterations), \
            int(anneal_iterations)

    @property
    def sharpness(self):
        """``c`` at :attr:`iteration`: linear from ``c_start`` to ``c_end``."""
        if self.iteration >= self.anneal_iterations:
            return self.c_end
        return self.c_start + (self.c_end - self.c_start) * self.iteration / \
            self.anneal_iterations

    @property
    def warmup_factor(self):
        """``lambda`` at :attr:`iteration`: 0 -> 1 over the warm-up, then 1."""
        if self.iteration >= self.warmup_iterations:
            return 1.0
        return self.iteration / self.warmup_iterations

    def recognition(self, x):
        """``(gamma, loc, scale)`` of ``q(z | x)``, each ``[images, latent_dim]``, with the
        warm-up applied to the slab (``loc = lambda mu``, ``scale = sigma^lambda``)."""
        logit, loc, scale = self._recognition(x)
        return torch.sigmoid(logit), loc, scale

    def _recognition(self, x):
        mean, log_scale, logit = self.encoder(x)
        lam = self.warmup_factor
        return logit, lam * mean, (lam * log_scale).exp()

    def slab_probability(self, x):
        """The recognition model's slab probabilities ``gamma``, ``[images, latent_dim]``."""
        return torch.sigmoid(self.encoder(self._images(x, None))[2])

    def guide(self, x=None, *, num_images=None):
        x = self._images(x, num_images)
        logit, loc, scale = self._recognition(x)
        q = RelaxedSpikeAndSlab(loc, scale, slab_logits=logit, sharpness=self.sharpness,
                                validate_args=False)
        with pyro.plate("images", x.shape[-4], dim=-1):
            return pyro.sample("z", q)

    def encode(self, x):
        """``mu * 1[gamma >= 0.5]``, ``[images, latent_dim]``, exactly zero where the gate is
        off."""
        gamma, loc, _ = self.recognition(self._images(x, None))
        return torch.where(is_included(gamma), loc, torch.zeros_like(loc))

    def loss(self):
        return VSCLoss()

    def checkpoint_options(self):
        return {**super().checkpoint_options(), "alpha": self.alpha,
                "spike_scale": self.spike_scale, "c_start": self.c_start, "c_end": self.c_end,
                "warmup_iterations": self.warmup_iterations,
                "anneal_iterations": self.anneal_iterations}

    def annealing_state(self):
        return {"sharpness": self.sharpness, "warmup": self.warmup_factor}
