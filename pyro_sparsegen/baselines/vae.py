"""β-VAE (Higgins et al., ICLR 2017) with the package's generator as decoder.

``p(z) = N(0, I)``, ``p(x | z)`` as :class:`~pyro_sparsegen.SparseGenerator`'s likelihood, a
Gaussian recognition model ``q(z | x) = N(mu(x), diag sigma(x)^2)``, trained on
``E_q[log p(x | z)] - beta * KL(q(z | x) || p(z))``.
"""

import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from .. import schedules
from .encoders import AmortizedGenerator


class _ScaleSites(Messenger):
    def __init__(self, scale, names):
        super().__init__()
        self.scale, self.names = scale, frozenset(names)

    def _pyro_sample(self, msg):
        if msg["name"] in self.names:
            msg["scale"] = self.scale * msg["scale"]


def scale_sites(fn, scale, names=("z",)):
    """Like :func:`pyro.poutine.scale`, but only for the sample sites called ``names``."""
    return _ScaleSites(scale, names)(fn)


class BetaVAELoss:
    """``-E_q[log p(x | z)] + beta * KL(q || p)`` summed over images, the KL of each latent site
    in ``latent_sites`` analytic where ``torch`` knows it (``TraceMeanField_ELBO``).

    A callable ``loss(model, guide, *args, **kwargs) -> tensor``, so it serves both
    ``pyro.infer.SVI(model, guide, optim, loss=BetaVAELoss(4.0))`` and a plain torch optimizer.
    """

    def __init__(self, beta=1.0, latent_sites=("z",), num_particles=1):
        self.beta, self.latent_sites = float(beta), tuple(latent_sites)
        self._elbo = TraceMeanField_ELBO(num_particles=num_particles, max_plate_nesting=1)

    def __call__(self, model, guide, *args, **kwargs):
        if self.beta != 1.0:
            model = scale_sites(model, self.beta, self.latent_sites)
            guide = scale_sites(guide, self.beta, self.latent_sites)
        return self._elbo.differentiable_loss(model, guide, *args, **kwargs)


class BetaVAE(AmortizedGenerator):
    """β-VAE: the generator under a dense N(0, I) prior with a Gaussian MLP encoder.

    ``model`` is :class:`~pyro_sparsegen.SparseGenerator`'s (plate ``"images"``, latent ``"z"``,
    observed ``"x"``) with the prior N(0, 1) per coordinate, so the Langevin analyses run on it
    unchanged; β enters only :meth:`loss`. A Gaussian prior has no inclusion probability, so
    a coordinate is inactive by ``|z| <= threshold`` only.

    :param network: a generator network (e.g. :class:`~pyro_sparsegen.MLPGenerator`).
    :param float beta: weight of the KL term (1: the plain VAE).
    :param float noise_scale: the likelihood's standard deviation.
    :param str likelihood: ``"normal"`` or ``"bernoulli"``.
    :param encoder_hidden: hidden widths of the encoder MLP.

    Example::

        >>> vae = BetaVAE(MLPGenerator(16), beta=4.0)
        >>> svi = pyro.infer.SVI(vae, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=vae.loss())
        >>> z = vae.encode(images)              # [images, 16], the encoder's mean
    """

    heads = 2

    def __init__(self, network, *, beta=1.0, noise_scale=0.3, likelihood="normal",
                 encoder_hidden=(400,)):
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < \
                float("inf"):
            raise ValueError(f"beta must be a non-negative finite number, got {beta!r}")
        super().__init__(network, schedule=schedules.dense(), noise_scale=noise_scale,
                         likelihood=likelihood, encoder_hidden=encoder_hidden)
        self.beta = float(beta)

    def prior(self):
        """N(0, 1) per coordinate (a true Gaussian, so the KL is analytic)."""
        like = self._param_like()
        key = (like.device, like.dtype)
        cached = self.__dict__.get("_normal_prior")
        if cached is None or cached[0] != key:
            zero = torch.zeros((), dtype=like.dtype, device=like.device)
            cached = (key, dist.Normal(zero, zero + 1, validate_args=False))
            self.__dict__["_normal_prior"] = cached
        return cached[1]

    def recognition(self, x):
        """``(mean, scale)`` of ``q(z | x)``, each ``[images, latent_dim]``."""
        mean, log_scale = self.encoder(x)
        return mean, log_scale.exp()

    def guide(self, x=None, *, num_images=None):
        x = self._images(x, num_images)
        loc, scale = self.recognition(x)
        with pyro.plate("images", x.shape[-4], dim=-1):
            return pyro.sample("z", dist.Normal(loc, scale, validate_args=False).to_event(1))

    def encode(self, x):
        """The encoder's mean ``[images, latent_dim]`` for ``x: [images, C, H, W]``."""
        return self.encoder(self._images(x, None))[0]

    def inclusion_probability(self, z):
        raise NotImplementedError("BetaVAE has a Gaussian prior: no inclusion probability")

    def loss(self):
        return BetaVAELoss(self.beta)

    def checkpoint_options(self):
        return {**super().checkpoint_options(), "beta": self.beta}

    def annealing_state(self):
        return {"beta": self.beta}
