"""The explaining-away posterior with a known answer (issue 20): a linear generator
``x = W z + N(0, 0.1^2)``, 16 pixels, ``z`` of 10 coordinates under ``SpikeAndSlab(0.3, 1.0,
0.05)``, two pairs of near-duplicate columns of ``W`` (either member of a pair explains an
image as well as the other). Given the gates the model is Gaussian, so the exact posterior
inclusion probabilities and ``P(|z_j| <= 0.2 | x)`` are sums over the 1,024 gate patterns, and
the evidence ``log p(x)`` a log-sum over them."""

import itertools
import math

import pyro
import pyro.distributions as dist
import torch

from pyro_sparsegen import SpikeAndSlab

WEIGHT, SLAB, SPIKE, NOISE, THRESHOLD = 0.3, 1.0, 0.05, 0.1, 0.2


def problem(pixels=16, dim=10, images=16, seed=0):
    """``(W [pixels, dim], x [images, pixels])``: columns 1 and 3 are near-duplicates of 0 and
    2; the images are drawn from the model with one member of each pair active."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()
    w = torch.randn(pixels, dim, generator=g, dtype=dtype) / math.sqrt(pixels) * 2
    w[:, 1] = w[:, 0] + 0.05 * torch.randn(pixels, generator=g, dtype=dtype)
    if dim > 3:
        w[:, 3] = w[:, 2] + 0.05 * torch.randn(pixels, generator=g, dtype=dtype)
    gates = torch.rand(images, dim, generator=g, dtype=dtype) < WEIGHT
    gates[:, :4] = False
    gates[:, 0] = True
    if dim > 3:
        gates[:, 2] = True
    scale = torch.where(gates, SLAB, SPIKE)
    z = torch.randn(images, dim, generator=g, dtype=dtype) * scale
    x = z @ w.T + NOISE * torch.randn(images, pixels, generator=g, dtype=dtype)
    return w, x


def make_model(w, weight=WEIGHT):
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", SpikeAndSlab(weight, SLAB, SPIKE).expand([w.shape[1]])
                            .to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, NOISE).to_event(1), obs=x)

    return model


def exact(w, x, weight=WEIGHT, threshold=THRESHOLD):
    """``(inclusion [images, dim], P(|z| <= threshold) [images, dim], log p(x) [images])`` by
    enumerating the gate patterns (float64)."""
    w, x = w.double(), x.double()
    pixels, dim = w.shape
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)
    var = torch.where(patterns > 0, SLAB ** 2, SPIKE ** 2)  # [P, dim]
    cov = (w * var[:, None, :]) @ w.T + NOISE ** 2 * torch.eye(pixels, dtype=torch.float64)
    log_prior = (patterns * math.log(weight) + (1 - patterns) * math.log(1 - weight)).sum(-1)
    marginal = dist.MultivariateNormal(torch.zeros(pixels, dtype=torch.float64), cov)
    log_joint = marginal.log_prob(x[:, None, :]) + log_prior  # [images, P]
    evidence = log_joint.logsumexp(-1)
    post = (log_joint - evidence[:, None]).exp()
    inclusion = post @ patterns
    precision = torch.diag_embed(1 / var) + w.T @ w / NOISE ** 2  # [P, dim, dim]
    v = torch.linalg.inv(precision)
    m = torch.einsum("pij,nj->npi", v, x @ w / NOISE ** 2)  # [images, P, dim]
    sd = torch.diagonal(v, dim1=-2, dim2=-1).sqrt()  # [P, dim]
    normal = torch.distributions.Normal(m, sd)
    near = normal.cdf(torch.tensor(threshold)) - normal.cdf(torch.tensor(-threshold))
    small = (post[:, :, None] * near).sum(1)
    return inclusion, small, evidence


def estimates(samples, weight=WEIGHT, threshold=THRESHOLD):
    """``(inclusion, P(|z| <= threshold))`` ``[images, dim]`` from draws ``z [chains, draws,
    images, dim]`` (the inclusion probability Rao-Blackwellised over the gate)."""
    z = samples["z"]
    prior = SpikeAndSlab(weight, SLAB, SPIKE)
    inclusion = prior.inclusion_probability(z).mean((0, 1))
    small = (z.abs() <= threshold).to(z.dtype).mean((0, 1))
    return inclusion, small
