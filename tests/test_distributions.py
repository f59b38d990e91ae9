"""Tests for pyro_sparsegen.distributions (the spike-and-slab prior)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit
from pyro.infer.mcmc.util import initialize_model

from pyro_sparsegen import SpikeAndSlab

# Several tests, each with a p-value: keep the chance of a spurious failure small.
TEST_FAILURE_RATE = 1e-3


def _direct_log_prob(value, w, s1, s0):
    """The mixture density written out with torch's Normal, as a reference."""
    value, w, s1, s0 = (torch.as_tensor(v, dtype=torch.float64) for v in (value, w, s1, s0))
    slab = w.log() + dist.Normal(0.0, s1).log_prob(value)
    spike = torch.log1p(-w) + dist.Normal(0.0, s0).log_prob(value)
    return torch.logaddexp(slab, spike)


# ---- shapes ---------------------------------------------------------------------------------


def test_shapes_broadcast_parameters(float64):
    d = SpikeAndSlab(torch.tensor([0.1, 0.5, 0.9]), 1.0, torch.tensor([[0.1], [0.2]]))
    assert d.batch_shape == (2, 3)
    assert d.event_shape == ()
    assert d.sample().shape == (2, 3)
    assert d.sample((4, 5)).shape == (4, 5, 2, 3)
    assert d.log_prob(torch.zeros(7, 1, 1)).shape == (7, 2, 3)
    assert d.mean.shape == d.variance.shape == (2, 3)
    assert d.inclusion_probability(torch.zeros(3)).shape == (2, 3)
    assert d.support is torch.distributions.constraints.real


def test_scalar_parameters_give_empty_batch_shape(float64):
    d = SpikeAndSlab(0.3, 1.0, 0.1)
    assert d.batch_shape == ()
    assert d.sample((10,)).shape == (10,)
    assert d.log_prob(torch.tensor(0.5)).shape == ()


def test_expand(float64):
    d = SpikeAndSlab(torch.tensor([0.2, 0.7]), 1.5, 0.05)
    e = d.expand((4, 2))
    assert type(e) is SpikeAndSlab
    assert e.batch_shape == (4, 2)
    for name in ("slab_weight", "slab_scale", "spike_scale"):
        assert getattr(e, name).shape == (4, 2)
        assert torch.equal(getattr(e, name)[3], getattr(d, name))
    value = torch.linspace(-2, 2, 8).reshape(4, 2)
    assert torch.equal(e.log_prob(value), d.log_prob(value))
    assert e.sample((3,)).shape == (3, 4, 2)
    assert torch.equal(e.variance, d.variance.expand(4, 2))
    # expand keeps the validation flag
    assert SpikeAndSlab(0.5, 1.0, 0.1, validate_args=True).expand((3,))._validate_args
    assert not SpikeAndSlab(0.5, 1.0, 0.1, validate_args=False).expand((3,))._validate_args


def test_expand_rejects_incompatible_shape(float64):
    with pytest.raises(RuntimeError):
        SpikeAndSlab(torch.tensor([0.2, 0.7]), 1.0, 0.1).expand((3,))


# ---- the density ----------------------------------------------------------------------------

PARAMS = [(0.5, 1.0, 0.1), (0.01, 1.0, 0.01), (0.9, 2.0, 0.5), (1.0, 1.0, 0.1), (0.0, 1.0, 0.1),
          (0.3, 0.2, 1.0)]


@pytest.mark.parametrize("w,s1,s0", PARAMS)
def test_density_integrates_to_one(float64, w, s1, s0):
    d = SpikeAndSlab(w, s1, s0)
    width = 12 * max(s1, s0)
    grid = torch.linspace(-width, width, 400_001)  # spacing far below the narrowest scale
    density = d.log_prob(grid).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("w,s1,s0", PARAMS)
def test_variance_is_analytic(float64, w, s1, s0):
    d = SpikeAndSlab(w, s1, s0)
    expected = w * s1**2 + (1 - w) * s0**2
    assert d.variance.item() == pytest.approx(expected, rel=1e-12)
    assert d.mean.item() == 0.0
    # ... and agrees with the second moment of the density itself
    width = 12 * max(s1, s0)
    grid = torch.linspace(-width, width, 400_001)
    second_moment = torch.trapezoid(grid**2 * d.log_prob(grid).exp(), grid).item()
    assert second_moment == pytest.approx(expected, rel=1e-6)


def test_sample_moments_match(float64):
    pyro.set_rng_seed(0)
    w, s1, s0 = 0.2, 1.0, 0.1
    d = SpikeAndSlab(w, s1, s0)
    n = 200_000
    z = d.sample((n,))
    var = w * s1**2 + (1 - w) * s0**2
    fourth = 3 * (w * s1**4 + (1 - w) * s0**4)
    assert abs(z.mean().item()) < 5 * math.sqrt(var / n)
    # standard error of the sample second moment: sqrt((E z^4 - var^2) / n)
    assert abs((z**2).mean().item() - var) < 5 * math.sqrt((fourth - var**2) / n)
    # the fraction of slab-sized values tells the mixture weight apart
    p = w * math.erfc(0.5 / s1 / math.sqrt(2)) + (1 - w) * math.erfc(0.5 / s0 / math.sqrt(2))
    assert abs((z.abs() > 0.5).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("w,s1,s0", PARAMS)
def test_log_prob_equals_direct_logaddexp(float64, w, s1, s0):
    value = torch.linspace(-5, 5, 101)
    d = SpikeAndSlab(w, s1, s0)
    torch.testing.assert_close(d.log_prob(value), _direct_log_prob(value, w, s1, s0),
                               rtol=1e-12, atol=1e-12)


def test_log_prob_equals_naive_mixture_where_it_does_not_underflow(float64):
    w, s1, s0 = 0.3, 1.0, 0.2
    value = torch.linspace(-3, 3, 61)
    naive = (w * dist.Normal(0.0, s1).log_prob(value).exp()
             + (1 - w) * dist.Normal(0.0, s0).log_prob(value).exp()).log()
    torch.testing.assert_close(SpikeAndSlab(w, s1, s0).log_prob(value), naive,
                               rtol=1e-12, atol=1e-12)


def test_log_prob_is_stable_for_tiny_weights_and_far_values(float64):
    w, s1, s0 = 1e-200, 1.0, 1e-3
    value = torch.tensor([0.0, 1e-3, 0.5, 50.0, -1e4])
    log_p = SpikeAndSlab(w, s1, s0).log_prob(value)
    assert torch.isfinite(log_p).all()
    # far out, only the (tiny) slab contributes: log w + log N(z; 0, s1)
    far = math.log(w) - 0.5 * 50.0**2 - 0.5 * math.log(2 * math.pi)
    assert log_p[3].item() == pytest.approx(far, rel=1e-12)
    # the naive mixture underflows to -inf there
    naive = (w * dist.Normal(0.0, s1).log_prob(value[3]).exp()).log()
    assert naive.item() == -math.inf
    # and in float32 the log density is finite too
    d32 = SpikeAndSlab(torch.tensor(1e-30, dtype=torch.float32), 1.0, 1e-3)
    assert torch.isfinite(d32.log_prob(value.float())).all()


def test_pure_slab_and_pure_spike(float64):
    value = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(SpikeAndSlab(1.0, 2.0, 0.1).log_prob(value),
                               dist.Normal(0.0, 2.0).log_prob(value))
    torch.testing.assert_close(SpikeAndSlab(0.0, 2.0, 0.1).log_prob(value),
                               dist.Normal(0.0, 0.1).log_prob(value))


@pytest.mark.parametrize("w,s1,s0", [(0.5, 1.0, 0.1), (0.1, 1.0, 0.3), (0.8, 2.0, 0.5)])
def test_goodness_of_fit(float64, w, s1, s0):
    pyro.set_rng_seed(0)
    d = SpikeAndSlab(w, s1, s0)
    samples = d.sample((20_000,))
    gof = auto_goodness_of_fit(samples, d.log_prob(samples).exp())
    assert gof > TEST_FAILURE_RATE


def test_goodness_of_fit_detects_a_wrong_density(float64):
    # the test above can fail: a Gaussian with the same variance is rejected
    pyro.set_rng_seed(0)
    d = SpikeAndSlab(0.5, 1.0, 0.1)
    samples = dist.Normal(0.0, d.variance.sqrt()).sample((20_000,))
    assert auto_goodness_of_fit(samples, d.log_prob(samples).exp()) < TEST_FAILURE_RATE


# ---- inclusion probability -------------------------------------------------------------------


@pytest.mark.parametrize("w,s1,s0", [(0.5, 1.0, 0.1), (0.01, 1.0, 0.05), (0.9, 3.0, 0.5)])
def test_inclusion_probability_is_bayes_rule(float64, w, s1, s0):
    value = torch.linspace(-2, 2, 41)
    slab = w * dist.Normal(0.0, s1).log_prob(value).exp()
    spike = (1 - w) * dist.Normal(0.0, s0).log_prob(value).exp()
    expected = slab / (slab + spike)
    torch.testing.assert_close(SpikeAndSlab(w, s1, s0).inclusion_probability(value), expected,
                               rtol=1e-10, atol=1e-12)


def test_inclusion_probability_edge_cases(float64):
    value = torch.tensor([0.0, 0.3, 1e3, -1e3])
    assert torch.equal(SpikeAndSlab(1.0, 1.0, 0.1).inclusion_probability(value),
                       torch.ones(4))
    assert torch.equal(SpikeAndSlab(0.0, 1.0, 0.1).inclusion_probability(value),
                       torch.zeros(4))
    far = SpikeAndSlab(1e-6, 1.0, 0.1).inclusion_probability(value)
    assert far[2].item() == 1.0 and far[3].item() == 1.0  # no nan where both densities vanish
    assert far[0].item() < 1e-5
    # symmetric in the value, increasing in |value|
    d = SpikeAndSlab(0.2, 1.0, 0.1)
    grid = torch.linspace(0, 3, 31)
    r = d.inclusion_probability(grid)
    assert torch.equal(r, d.inclusion_probability(-grid))
    assert (r[1:] >= r[:-1]).all()


def test_inclusion_probability_keeps_nan(float64):
    d = SpikeAndSlab(0.3, 1.0, 0.1, validate_args=False)
    r = d.inclusion_probability(torch.tensor([float("nan"), 0.0, 1.0]))
    assert torch.isnan(r[0])  # not a made-up 0.5, which would count as active
    assert torch.isfinite(r[1:]).all()


@pytest.mark.parametrize("w", [0.5, 0.01])
def test_tiny_spike_scales_stay_finite_in_float32(w):
    # float32 scale**2 underflows to 0 below ~1e-19: value**2 / scale**2 was 0 / 0 at z = 0
    d = SpikeAndSlab(w, 1.0, 1e-30)
    z = torch.tensor([0.0, 1.0], dtype=torch.float32)
    r = d.inclusion_probability(z)
    assert torch.isfinite(r).all() and r[0].item() < 1e-20 and r[1].item() == 1.0
    log_p = d.log_prob(z)
    assert torch.isfinite(log_p[0]) and log_p[0].item() > 60  # the spike's peak, -log(1e-30) - ...
    assert torch.isfinite(log_p[1])


def test_inclusion_probability_matches_simulated_gates(float64):
    # draw (gate, value) pairs; among values near v, the slab fraction is r(v)
    pyro.set_rng_seed(1)
    w, s1, s0, n = 0.3, 1.0, 0.2, 400_000
    gate = torch.rand(n) < w
    value = torch.where(gate, s1 * torch.randn(n), s0 * torch.randn(n))
    d = SpikeAndSlab(w, s1, s0)
    for centre in (0.1, 0.3, 0.5):
        near = (value.abs() - centre).abs() < 0.01
        m = near.sum().item()
        observed = gate[near].double().mean().item()
        expected = d.inclusion_probability(value[near]).mean().item()
        assert abs(observed - expected) < 5 * math.sqrt(expected * (1 - expected) / m)


# ---- argument validation ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,name", [
    (dict(slab_weight=-0.1), "slab_weight"),
    (dict(slab_weight=1.5), "slab_weight"),
    (dict(slab_weight=math.nan), "slab_weight"),
    (dict(slab_scale=0.0), "slab_scale"),
    (dict(slab_scale=-1.0), "slab_scale"),
    (dict(slab_scale=math.inf), "slab_scale"),
    (dict(spike_scale=0.0), "spike_scale"),
    (dict(spike_scale=-0.1), "spike_scale"),
    (dict(spike_scale=math.nan), "spike_scale"),
])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_invalid_parameters_raise_value_error_naming_them(kwargs, name, as_tensor):
    args = dict(slab_weight=0.5, slab_scale=1.0, spike_scale=0.1)
    args.update(kwargs)
    if as_tensor:
        args = {k: torch.tensor([v, v]) for k, v in args.items()}
    with pytest.raises(ValueError, match=name):
        SpikeAndSlab(**args, validate_args=True)


def test_numbers_are_checked_even_without_validation():
    with pytest.raises(ValueError, match="slab_weight"):
        SpikeAndSlab(2.0, 1.0, 0.1, validate_args=False)


def test_valid_boundary_weights_are_accepted():
    for w in (0.0, 1.0):
        SpikeAndSlab(w, 1.0, 0.1, validate_args=True)
        SpikeAndSlab(torch.tensor([w]), 1.0, 0.1, validate_args=True)


def test_log_prob_validates_the_sample_when_asked(float64):
    with pytest.raises(ValueError):
        SpikeAndSlab(0.5, 1.0, 0.1, validate_args=True).log_prob(torch.tensor(math.nan))


# ---- inside Pyro -----------------------------------------------------------------------------


def test_latent_site_under_initialize_model(float64):
    prior = SpikeAndSlab(0.2, 1.0, 0.1)
    x = torch.tensor([0.3, -1.2, 0.05])

    def model(x):
        with pyro.plate("data", 3):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    pyro.set_rng_seed(0)
    params, potential_fn, transforms, _ = initialize_model(model, model_args=(x,))
    assert set(params) == {"z"} and params["z"].shape == (3,)
    z = torch.tensor([0.1, -0.8, 0.0], requires_grad=True)
    potential = potential_fn({"z": z})
    expected = -(prior.log_prob(z).sum() + dist.Normal(z, 0.5).log_prob(x).sum())
    torch.testing.assert_close(potential, expected)
    (grad,) = torch.autograd.grad(potential, z)
    assert torch.isfinite(grad).all()
    # the site is unconstrained: the transform is the identity
    t = transforms["z"]
    value = torch.tensor([-3.0, 0.0, 2.0])
    torch.testing.assert_close(t(value), value)


def test_closed_form_gradients_match_finite_differences(float64):
    # the log densities' hand-derived backward passes against numerical differentiation
    from pyro_sparsegen.distributions import _IsotropicLogProb, _LogProbFixedParams

    d = SpikeAndSlab(torch.tensor(0.3), torch.tensor(1.0), torch.tensor(0.05))
    z = torch.tensor([-1.3, -0.04, 0.0, 0.01, 0.2, 2.5], requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: _LogProbFixedParams.apply(v, *d._constants()),
                                    (z,))
    value = torch.rand(3, 2, 4)
    loc = torch.rand(3, 2, 4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: _IsotropicLogProb.apply(value, m, 2.0, 0.7, 2),
                                    (loc,))
    assert torch.autograd.gradcheck(
        lambda v: _IsotropicLogProb.apply(v, loc.detach(), 2.0, 0.7, 2),
        (value.clone().requires_grad_(),))


def test_the_closed_form_path_is_the_density_and_gradient_of_autograds(float64):
    d = SpikeAndSlab(torch.tensor(0.3), torch.tensor(1.0), torch.tensor(0.05))
    z = torch.randn(50, requires_grad=True)
    fast = d.log_prob(z)  # parameters need no gradient: the closed-form path
    (g_fast,) = torch.autograd.grad(fast.sum(), z)
    w = torch.tensor(0.3, requires_grad=True)  # a parameter that needs one: autograd
    slow = SpikeAndSlab(w, torch.tensor(1.0), torch.tensor(0.05)).log_prob(z)
    (g_slow,) = torch.autograd.grad(slow.sum(), z)
    torch.testing.assert_close(fast, slow.detach())
    torch.testing.assert_close(g_fast, g_slow)
    torch.testing.assert_close(g_fast, -d.secant_curvature(z) * z)
