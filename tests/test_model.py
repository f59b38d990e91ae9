"""Tests for pyro_sparsegen.model (the generator as a Pyro model)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_sparsegen import (ABP, MLPGenerator, ShortRunLangevin, SparseGenerator, SpikeAndSlab,
                            schedules)

D, SHAPE = 5, (1, 4, 4)


def _model(schedule=None, **kwargs):
    torch.manual_seed(0)
    return SparseGenerator(MLPGenerator(D, SHAPE, hidden=(8,)), schedule=schedule, **kwargs)


def _images(n=3):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1))


class LaplaceGenerator(SparseGenerator):
    """A variant prior: the Bayesian lasso's Laplace(0, b) instead of spike-and-slab."""

    def __init__(self, network, scale=0.5, **kwargs):
        super().__init__(network, **kwargs)
        self.scale = scale

    def prior(self):
        like = next(self.network.parameters())
        return dist.Laplace(torch.zeros((), dtype=like.dtype), self.scale)


# ---- sites -----------------------------------------------------------------------------------


def test_trace_sites_and_shapes(float64):
    model, x = _model(schedules.constant(0.2, 1.0, 0.1)), _images()
    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    z, obs = trace.nodes["z"], trace.nodes["x"]
    assert [f.name for f in z["cond_indep_stack"]] == ["images"]
    assert z["value"].shape == (3, D)
    assert z["fn"].batch_shape == (3,) and z["fn"].event_shape == (D,)
    assert not z["is_observed"]
    assert obs["is_observed"] and obs["value"] is x
    assert obs["fn"].batch_shape == (3,) and obs["fn"].event_shape == SHAPE
    assert z["log_prob"].shape == obs["log_prob"].shape == (3,)
    # the site log densities are the documented formulas
    prior = SpikeAndSlab(0.2, 1.0, 0.1)
    torch.testing.assert_close(z["log_prob"], prior.log_prob(z["value"]).sum(-1))
    mean = model.network(z["value"])
    expected = dist.Normal(mean, 0.3).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(obs["log_prob"], expected)


def test_unobserved_call_samples_images(float64):
    model = _model()
    trace = poutine.trace(model).get_trace(num_images=4)
    assert trace.nodes["x"]["value"].shape == (4, *SHAPE)
    assert not trace.nodes["x"]["is_observed"]
    assert model(num_images=2).shape == (2, *SHAPE)


def test_default_schedule_is_a_dense_standard_normal(float64):
    model = _model()
    z = torch.linspace(-2, 2, 2 * D).reshape(2, D)
    torch.testing.assert_close(model.prior().log_prob(z), dist.Normal(0.0, 1.0).log_prob(z))


def test_noise_scale_sets_the_likelihood(float64):
    model, x = _model(noise_scale=0.7), _images()
    z = torch.randn(3, D)
    expected = dist.Normal(model.network(z), 0.7).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(model.likelihood(z).log_prob(x), expected)
    assert model.likelihood(z).mean.shape == (3, *SHAPE)


def test_likelihood_samples_and_expands(float64):
    model = _model()
    z = torch.randn(3, D)
    lik = model.likelihood(z)
    pyro.set_rng_seed(0)
    draws = lik.sample((20_000,))
    assert draws.shape == (20_000, 3, *SHAPE)
    residual = draws - lik.mean
    assert residual.mean(0).abs().max().item() < 5 * 0.3 / math.sqrt(20_000)
    assert abs(residual.std().item() - 0.3) < 5 * 0.3 / math.sqrt(2 * residual.numel())
    expanded = lik.expand((2, 3))
    assert expanded.batch_shape == (2, 3)
    torch.testing.assert_close(expanded.log_prob(draws[0]), lik.log_prob(draws[0]).expand(2, 3))


def test_bernoulli_likelihood(float64):
    model = _model(likelihood="bernoulli")
    x = (_images() > 0.5).double()
    trace = poutine.trace(model).get_trace(x)
    z = trace.nodes["z"]["value"]
    p = model.network(z)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum((-3, -2, -1))
    torch.testing.assert_close(trace.nodes["x"]["fn"].log_prob(x), expected)
    images = model(num_images=5)
    assert set(images.unique().tolist()) <= {0.0, 1.0}


# ---- the schedule's position -----------------------------------------------------------------


def test_iteration_changes_the_prior(float64):
    schedule = schedules.authors(warmup_iterations=2, decay_per_iteration=0.1, floor=0.01)
    model, x = _model(schedule), _images()
    z = torch.full((3, D), 0.05)

    def prior_term():
        cond = poutine.condition(model, data={"z": z})
        trace = poutine.trace(cond).get_trace(x)
        return trace.nodes["z"]["fn"], trace.log_prob_sum() - trace.nodes["x"]["fn"].log_prob(
            x).sum()

    fn0, lp0 = prior_term()
    assert model.iteration == 0
    assert torch.all(fn0.base_dist.slab_weight == 1.0)
    model.iteration = 7
    fn7, lp7 = prior_term()
    torch.testing.assert_close(fn7.base_dist.slab_weight,
                               torch.full((3, D), schedule(7).slab_weight))
    assert lp7.item() > lp0.item() + 1  # a small z is more likely under the sparser prior
    model.iteration = 0
    assert prior_term()[1].item() == pytest.approx(lp0.item(), rel=1e-12)


def test_prior_follows_the_network_dtype():
    model = _model(schedules.constant(0.1))
    assert model.prior().slab_weight.dtype == torch.float32
    model.double()
    assert model.prior().slab_weight.dtype == torch.float64
    assert model.prior_params() == (0.1, 1.0, 0.1)


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_iteration(value):
    with pytest.raises(ValueError, match="iteration"):
        _model().iteration = value


# ---- generation ------------------------------------------------------------------------------


def test_generate(float64):
    pyro.set_rng_seed(0)
    model = _model(schedules.constant(0.1, 1.0, 0.01))
    images, z = model.generate(2000)
    assert images.shape == (2000, *SHAPE) and z.shape == (2000, D)
    assert ((images > 0) & (images < 1)).all()
    torch.testing.assert_close(images, model.network(z))
    # codes come from the sparse prior: about 10 % of coordinates are slab-sized
    n = z.numel()
    p = 0.1 * math.erfc(0.2 / math.sqrt(2))  # P(|z| > 0.2); the spike never gets there
    assert abs((z.abs() > 0.2).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    noisy, _ = model.generate(3, mean=False)
    assert noisy.shape == (3, *SHAPE)
    assert ((noisy < 0) | (noisy > 1)).any()  # Gaussian pixel noise, sigma = 0.3
    assert not torch.is_grad_enabled() or not images.requires_grad


def test_inclusion_probability(float64):
    model = _model(schedules.constant(0.2, 1.0, 0.1))
    z = torch.tensor([[0.0, 0.05, 0.3, 1.0, -2.0]])
    torch.testing.assert_close(model.inclusion_probability(z),
                               SpikeAndSlab(0.2, 1.0, 0.1).inclusion_probability(z))
    with pytest.raises(NotImplementedError):
        LaplaceGenerator(MLPGenerator(D, SHAPE, hidden=(8,))).inclusion_probability(z)


# ---- the learned-scale prior -----------------------------------------------------------------

SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)


def _learned_scale(slab_weight=0.3):
    """A learned-scale model handed over at once (constant schedule: slab scale 1.5, spike
    0.1), its learned weights set to ``slab_weight`` and its slab scales to :data:`SCALES`
    (``float64``: the tests' dtype)."""
    model = _model(schedules.constant(0.3, 1.5, 0.1), prior="learned-scale")
    assert model.handover_iteration == 0
    torch.testing.assert_close(model.slab_log_scale.exp().detach(),
                               torch.full((D,), 1.5))  # from the schedule's final slab scale
    with torch.no_grad():
        model.slab_logit.fill_(math.log(slab_weight / (1 - slab_weight)))
        model.slab_log_scale.copy_(torch.tensor(SCALES).log())
    return model


def test_the_learned_scale_prior_reads_its_per_dimension_scales(float64):
    model, scales = _learned_scale(), torch.tensor(SCALES)
    prior = model.prior()
    torch.testing.assert_close(prior.slab_scale.detach(), scales)
    torch.testing.assert_close(prior.spike_scale, torch.full((D,), 0.1))  # the schedule's
    z = torch.tensor([[0.0, 0.05, 0.3, 1.0, -2.0], [0.6, -0.6, 0.6, -0.6, 0.6]])
    expected = SpikeAndSlab(torch.full((D,), 0.3), scales, 0.1).inclusion_probability(z)
    torch.testing.assert_close(model.inclusion_probability(z).detach(), expected)
    # the crossing move jumps by each dimension's log(slab scale / spike scale)
    target = ShortRunLangevin(model, metropolis=True, noise=True).target((_images(2),))
    density = target.density(*target.pack_free({"z": z}), crossing=True)
    torch.testing.assert_close(density.log_scale_ratio, (scales / 0.1).log().expand(2, D))


def test_generate_draws_from_the_learned_scales(float64):
    pyro.set_rng_seed(0)
    n = 4000
    _, z = _learned_scale(slab_weight=1 - 1e-9).generate(n)  # every coordinate in its slab
    # the sd of n normal draws has a standard error of about sd / sqrt(2 n)
    assert ((z.std(0) / torch.tensor(SCALES) - 1).abs() < 5 / math.sqrt(2 * n)).all()


def _learned_slab_scale(true_scale):
    """The slab scales learned by 15 ABP steps on images of codes drawn with slab scale
    ``true_scale`` (the generator fixed: it is the one that made the images)."""
    pyro.set_rng_seed(0)
    network = MLPGenerator(4, SHAPE, hidden=(16,))
    with torch.no_grad():  # a generator that the codes move: inference finds them
        network.net[0].weight.mul_(4.0)
        network.net[2].weight.mul_(4.0)
        z = SpikeAndSlab(0.5, true_scale, 0.1).sample((50, 4))
        x = network(z) + 0.1 * torch.randn(50, *SHAPE)
    network.requires_grad_(False).train(False)  # the prior's parameters alone are learned
    model = SparseGenerator(network, schedule=schedules.constant(0.5, 1.0, 0.1),
                            noise_scale=0.1, prior="learned-scale")
    kernel = ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=30,
                              step_size=0.1, derive=False)  # short runs: no graph to derive
    abp = ABP(model, kernel, pyro.optim.Adam({"lr": 0.15}), num_data=50)
    for _ in range(15):
        abp.step(x)
    return model.slab_log_scale.exp().detach()


def test_the_learned_slab_scale_moves_where_the_data_want_it(float64):
    # from the schedule's slab scale 1: down for codes of slab scale 0.4, up for 2.5
    assert (_learned_slab_scale(0.4) < 0.6).all()  # reached 0.22 .. 0.43
    assert (_learned_slab_scale(2.5) > 1.15).all()  # reached 1.24 .. 1.41


# ---- fast-path terms -------------------------------------------------------------------------


def test_the_kernel_evaluates_the_models_own_trace(float64):
    # no second copy of the density: what the kernel evaluates is the trace's log_prob
    model, x = _model(schedules.constant(0.3, 1.0, 0.05)), _images()
    z = torch.randn(3, D)
    log_density, log_lik = ShortRunLangevin(model).log_density({"z": z}, x)
    trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    trace.compute_log_prob()
    torch.testing.assert_close(log_lik, trace.nodes["x"]["log_prob"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_density - log_lik, trace.nodes["z"]["log_prob"], rtol=1e-12,
                               atol=1e-12)
    # leading replica dims
    zz = torch.randn(2, 3, D)
    lp, ll = ShortRunLangevin(model).log_density({"z": zz}, x)
    assert lp.shape == ll.shape == (2, 3)
    torch.testing.assert_close(ll[1], ShortRunLangevin(model).log_density({"z": zz[1]}, x)[1])


# ---- a variant prior -------------------------------------------------------------------------


def test_variant_prior_via_subclass(float64):
    torch.manual_seed(0)
    model, x = LaplaceGenerator(MLPGenerator(D, SHAPE, hidden=(8,)), scale=0.5), _images()
    trace = poutine.trace(model).get_trace(x)
    assert isinstance(trace.nodes["z"]["fn"].base_dist, dist.Laplace)
    assert trace.nodes["z"]["fn"].event_shape == (D,)
    # the kernel sees the Laplace prior: its log density equals the model's trace
    z = torch.randn(3, D)
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=20, noise=False)
    log_density, log_lik = kernel.log_density({"z": z}, x)
    log_prior = log_density - log_lik
    cond = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    cond.compute_log_prob()
    torch.testing.assert_close(log_prior, dist.Laplace(0.0, 0.5).log_prob(z).sum(-1))
    torch.testing.assert_close(log_prior, cond.nodes["z"]["log_prob"])
    torch.testing.assert_close(log_lik, cond.nodes["x"]["log_prob"])
    # and inference follows it: two steps of gradient ascent from zeros, by hand
    h = 0.5 * 0.05**2
    z = torch.zeros(3, D)
    for _ in range(2):
        z = z.detach().requires_grad_(True)
        log_p = dist.Laplace(0.0, 0.5).log_prob(z).sum() + model.likelihood(z).log_prob(x).sum()
        (grad,) = torch.autograd.grad(log_p, z)
        z = z + h * grad
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=2, noise=False)
    out = kernel.infer(x)["z"]
    torch.testing.assert_close(out, z.detach(), rtol=1e-12, atol=1e-14)
    dense = ShortRunLangevin(SparseGenerator(model.network), step_size=0.05, num_steps=2,
                             noise=False).infer(x)["z"]
    assert (out - dense).abs().max().item() > 1e-4  # the prior made a difference


def test_prior_with_wrong_event_shape_is_rejected(float64):
    class Bad(SparseGenerator):
        def prior(self):
            return dist.Normal(torch.zeros(D + 1), 1.0).to_event(1)

    with pytest.raises(ValueError, match="event shape"):
        poutine.trace(Bad(MLPGenerator(D, SHAPE, hidden=(8,)))).get_trace(_images())


# ---- argument validation ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(noise_scale=0.0), "noise_scale"),
    (dict(noise_scale=-1.0), "noise_scale"),
    (dict(noise_scale=math.inf), "noise_scale"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(prior="learned_scale"), "prior must be one of"),
    (dict(schedule={"slab_weight": 0.1}), "schedule"),
])
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_network_must_expose_sizes():
    with pytest.raises(ValueError, match="latent_dim"):
        SparseGenerator(torch.nn.Linear(3, 4))


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.rand(3, 1, 5, 5),), {}, "shape"),
    ((torch.rand(1, 4, 4),), {}, "shape"),
    ((_images(3),), dict(num_images=4), "disagrees"),
    ((), {}, "num_images"),
    ((), dict(num_images=0), "num_images"),
    (([[0.0]],), {}, "tensor"),
])
def test_call_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model()(*args, **kwargs)


@pytest.mark.parametrize("kind, names", [
    ("learned", {"slab_logit"}), ("learned-scale", {"slab_logit", "slab_log_scale"}),
    ("hierarchical", {"log_concentration"})])
def test_each_prior_kind_has_exactly_its_own_parameters(kind, names):
    # a stray parameter changes the checkpoint's keys (files of another version stop loading)
    # and hands the optimiser a parameter nothing uses
    model = SparseGenerator(MLPGenerator(D, SHAPE, hidden=(8,)),
                            schedule=schedules.constant(0.5, 1.0, 0.1), prior=kind)
    own = {name for name, _ in model.named_parameters() if not name.startswith("network.")}
    assert own == names


def test_a_learned_slab_scale_never_falls_to_the_spike(float64):
    # below the spike's scale "slab" and "spike" would trade roles: the prior keeps the slab
    # at least SLAB_OVER_SPIKE spike scales wide whatever the parameter says
    from pyro_sparsegen.model import SLAB_OVER_SPIKE

    model = _learned_scale()
    with torch.no_grad():
        model.slab_log_scale.fill_(math.log(0.01))  # under the spike's 0.1
    prior = model.prior()
    torch.testing.assert_close(prior.slab_scale.detach(), torch.full((D,), 0.1 * SLAB_OVER_SPIKE))
    z = torch.tensor([[1.0, 0.5, 0.3, 0.0, -1.0]])
    assert bool((model.inclusion_probability(z)[0, :3] > 0.5).all())  # large values: the slab
