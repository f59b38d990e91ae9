"""Replica exchange (pyro_sparsegen.infer.tempering), the pair move and the evidence: the swap
step against the model, the ladder's update, round trips against a reference, exactness of
every level's target on small models with closed forms, the stepping-stone evidence against
exact ``log p(x)``, and what is refused."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from explaining_away import estimates, exact, make_model, problem
from pyro_sparsegen import ShortRunLangevin, SpikeAndSlab
from pyro_sparsegen.infer import tempering
from pyro_sparsegen.infer.core import Randoms

# the explaining-away test's bounds (seeded; measured 0.074 tempered with the learned pair
# moves, 0.571 untempered without the pair move; before the learned pairs 0.145 tempered)
TEMPERED_MAX_ERROR, PLAIN_MIN_ERROR = 0.2, 0.25


def _two_twins(images):
    """Two near-duplicate columns, 2 pixels, one image repeated ``images`` times (every copy
    an independent chain, so averages over them cut the Monte Carlo error)."""
    w = torch.tensor([[1.0, 0.9], [0.5, 0.6]])
    x = torch.tensor([0.9, 0.5]).expand(images, 2).clone()
    return w, x, make_model(w, weight=0.3)


def _noise_model(w, noise):
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", SpikeAndSlab(0.3, 1.0, 0.05).expand([w.shape[1]]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, noise).to_event(1), obs=x)

    return model


def _mean_log_likelihood(w, x, beta, noise=0.1):
    """Exact ``E[log N(x; W z, noise^2)]`` under ``prior x likelihood^beta`` (enumerating the
    gates; the tempered likelihood is Gaussian with noise ``noise / sqrt(beta)``)."""
    pixels, dim = w.shape
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)))
    var = torch.where(patterns > 0, 1.0, 0.05 ** 2)
    log_prior = (patterns * math.log(0.3) + (1 - patterns) * math.log(0.7)).sum(-1)
    if beta == 0:
        post = log_prior.exp()
        m = torch.zeros(len(patterns), dim)
        v = torch.diag_embed(var)
    else:
        tempered = noise ** 2 / beta
        cov = (w * var[:, None, :]) @ w.T + tempered * torch.eye(pixels)
        log_joint = dist.MultivariateNormal(torch.zeros(pixels), cov).log_prob(x) + log_prior
        post = (log_joint - log_joint.logsumexp(0)).exp()
        v = torch.linalg.inv(torch.diag_embed(1 / var) + w.T @ w / tempered)
        m = torch.einsum("pij,j->pi", v, w.T @ x / tempered)
    residual = ((x - m @ w.T) ** 2).sum(-1) + torch.einsum("ij,pjk,ik->p", w, v, w)
    expected = -0.5 * residual / noise ** 2 - pixels * math.log(noise * math.sqrt(2 * math.pi))
    return (post * expected).sum()


def test_a_swap_re_tempers_both_states_exactly_as_the_model_would(float64):
    w, x, model = _two_twins(3)
    levels, ladders = 3, 2
    kernel = ShortRunLangevin(model, metropolis=True, tempering=levels)
    target = kernel.target((x,), {}, levels * ladders)
    beta = torch.tensor([[1.0, 1.0, 1.0], [0.4, 0.3, 0.2], [0.0, 0.1, 0.0]])
    position = torch.randn(levels * ladders, 3, 2)
    state = kernel.transition(target, (x,), {}, tempered=True).init(
        position, position.new_zeros(levels * ladders, 0), tempering.rows(beta, ladders))
    log_u = torch.full((levels - 1, ladders, 3), -math.inf)  # every proposed pair swaps
    ladder = tempering.Ladder(beta, log_u, torch.tensor(0), torch.zeros(levels, ladders, 3,
                                                                        dtype=torch.long))
    swapped, info = tempering.swap_levels(state, ladder)
    rows = position.reshape(levels, ladders, 3, 2)
    assert torch.equal(swapped.position.reshape(levels, ladders, 3, 2)[0], rows[1])
    assert torch.equal(swapped.position.reshape(levels, ladders, 3, 2)[1], rows[0])
    assert torch.equal(swapped.position.reshape(levels, ladders, 3, 2)[2], rows[2])
    fresh = target.density(swapped.position, swapped.global_position, beta=tempering.rows(
        beta, ladders))
    for name in ("local", "observed", "grad", "grad_observed"):
        assert torch.allclose(getattr(swapped.density, name), getattr(fresh, name),
                              rtol=1e-12, atol=1e-12), name
    assert info.swapped[0].all() and not info.swapped[1].any()  # parity 0: the pair (0, 1)


def test_the_swap_probability_is_the_tempered_ratio(float64):
    w, x, model = _two_twins(1)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=2)
    target = kernel.target((x,), {}, 2)
    beta = torch.tensor([[1.0], [0.25]])
    state = kernel.transition(target, (x,), {}, tempered=True).init(
        torch.randn(2, 1, 2), torch.zeros(2, 0), tempering.rows(beta, 1))
    loglik = state.density.observed[:, 0]
    ladder = tempering.Ladder(beta, torch.zeros(1, 1, 1), torch.tensor(1),
                              torch.zeros(2, 1, 1, dtype=torch.long))
    _, info = tempering.swap_levels(state, ladder)
    expected = min(1.0, math.exp(0.75 * float(loglik[1] - loglik[0])))
    assert float(info.accept_prob) == pytest.approx(expected, rel=1e-12)
    assert not info.swapped.any()  # parity 1 proposes no pair of a two-level ladder


def _reference_round_trips(levels, steps):
    """Forced swaps, walked by hand: which walker sits where, and its trips."""
    at = list(range(levels))  # walker at each level
    phase = {w: 1 if w == 0 else 0 for w in range(levels)}
    trips = 0
    for t in range(steps):
        for i in range(t % 2, levels - 1, 2):
            at[i], at[i + 1] = at[i + 1], at[i]
        cold, hot = at[0], at[-1]
        if phase[cold] == 2:
            trips += 1
        phase[cold] = 1
        if phase[hot] == 1:
            phase[hot] = 2
    return trips


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_round_trips_are_counted_as_a_walk_by_hand(float64, levels):
    w, x, model = _two_twins(1)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=levels)
    target = kernel.target((x,), {}, levels)
    beta = tempering.default_ladder(levels, 1)
    state = kernel.transition(target, (x,), {}, tempered=True).init(
        torch.randn(levels, 1, 2), torch.zeros(levels, 0), tempering.rows(beta, 1))
    phase = torch.zeros(levels, 1, 1, dtype=torch.long)
    phase[0] = 1
    trips = 0
    for t in range(23):
        ladder = tempering.Ladder(beta, torch.full((levels - 1, 1, 1), -math.inf),
                                  torch.tensor(t % 2), phase)
        state, info = tempering.swap_levels(state, ladder)
        phase = info.phase
        trips += int(info.round_trip.sum())
    assert trips == _reference_round_trips(levels, 23) > 0


def test_the_ladder_update_equalises_the_rejection_along_the_barrier(float64):
    beta = tempering.default_ladder(5, 2)
    rejection = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.3, 0.3, 0.3, 0.3]]).T
    new = tempering.adapt_ladder(beta, rejection)
    assert torch.equal(new[:, 1], beta[:, 1])  # equal rejections: already equal steps
    assert new[0, 0] == 1 and new[-1, 0] == 0 and (new[1:, 0] < new[:-1, 0]).all()

    def barrier(b):  # the piecewise-linear barrier of the old ladder, at b
        xs, ys = beta[:, 0].flip(0), torch.cat([torch.zeros(1), rejection[:, 0].flip(0)
                                               .cumsum(0)])
        i = int(torch.searchsorted(xs, b, right=True).clamp(1, 4))
        return ys[i - 1] + (b - xs[i - 1]) / (xs[i] - xs[i - 1]) * (ys[i] - ys[i - 1])

    levels = torch.stack([barrier(b) for b in new[:, 0].flip(0)])
    assert torch.allclose(levels.diff(), torch.full((4,), 1.7 / 4), rtol=1e-10)


def test_every_level_samples_prior_times_likelihood_to_its_beta(float64):
    # Two twin columns, 2 pixels, 48 copies of one image; ladder fixed at (1, 0.3, 0): the
    # coldest level's inclusion probabilities and every level's mean log-likelihood
    # against enumeration of the gates (the hot levels through level_log_likelihood).
    w, x, _ = _two_twins(48)
    model = _noise_model(w, 0.3)
    ladder = [1.0, 0.3, 0.0]
    kernel = ShortRunLangevin(model, metropolis=True, tempering=ladder, adapt_ladder=False,
                              step_size=0.3)
    samples, stats = kernel.sample_chains(x, num_chains=2, num_draws=250, warmup_steps=150,
                                          thin=2)
    inclusion = SpikeAndSlab(0.3, 1.0, 0.05).inclusion_probability(samples["z"]).mean((0, 1, 2))
    exact_inclusion = _exact_inclusion(w, x[0], 0.3)
    assert torch.allclose(inclusion, exact_inclusion, atol=0.03), (inclusion, exact_inclusion)
    mean_ll = stats["level_log_likelihood"].mean((0, 1, 3))
    for level, beta in enumerate(ladder):
        expected = _mean_log_likelihood(w, x[0], beta, noise=0.3)
        assert float(mean_ll[level]) == pytest.approx(float(expected), abs=0.04 + 0.02 * abs(
            float(expected))), (level, mean_ll, expected)
    assert (stats["swap_accept_prob"] > 0.05).all()


def _exact_inclusion(w, x, noise):
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=w.shape[1])))
    var = torch.where(patterns > 0, 1.0, 0.05 ** 2)
    cov = (w * var[:, None, :]) @ w.T + noise ** 2 * torch.eye(w.shape[0])
    log_prior = (patterns * math.log(0.3) + (1 - patterns) * math.log(0.7)).sum(-1)
    log_joint = dist.MultivariateNormal(torch.zeros(w.shape[0]), cov).log_prob(x) + log_prior
    return (log_joint - log_joint.logsumexp(0)).exp() @ patterns


def test_the_pair_move_keeps_the_posterior_exact_and_trades_the_twins(float64):
    # Without tempering: 64 copies of an image whose twins explain it almost equally; with
    # the pair move (and the crossing move) the chains trade one twin for the other.
    w, x, _ = _two_twins(64)
    model = _noise_model(w, 0.05)
    exact_inclusion = _exact_inclusion(w, x[0], 0.05)
    kernel = ShortRunLangevin(model, metropolis=True, step_size=0.05)
    samples, _ = kernel.sample_chains(x, num_chains=2, num_draws=200, warmup_steps=200,
                                      thin=2)
    inclusion = SpikeAndSlab(0.3, 1.0, 0.05).inclusion_probability(samples["z"]).mean((0, 1, 2))
    assert torch.allclose(inclusion, exact_inclusion, atol=0.04), (inclusion, exact_inclusion)


def test_the_pair_move_swaps_two_coordinates_of_one_site_uniformly():
    from pyro_sparsegen.infer.core import Options, draw_randoms

    index = torch.tensor([0, 1, 2, 5, 6])  # a site of three coordinates, one of two
    start, size = torch.tensor([0, 0, 0, 3, 3]), torch.tensor([3, 3, 3, 2, 2])
    state = type("S", (), {"position": torch.zeros(20000, 1, 7),
                           "global_position": torch.zeros(20000, 0)})()
    randoms = draw_randoms(state, Options(metropolis=True, pairs=True), None, False,
                           (index, start, size))
    pairs = torch.stack([randoms.pair_first, randoms.pair_second], -1).reshape(-1, 2)
    counts = {}
    for a, b in pairs.tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    expected = {(a, b) for a in (0, 1, 2) for b in (0, 1, 2) if a != b} | {(5, 6), (6, 5)}
    assert set(counts) == expected
    for (a, b), n in counts.items():  # P(j, k) = 1 / (M (m - 1)) = P(k, j)
        m = 3 if a < 3 else 2
        assert n / len(pairs) == pytest.approx(1 / (5 * (m - 1)), abs=0.01), (a, b)
    assert isinstance(randoms, Randoms)


def test_evidence_of_a_linear_gaussian_model_against_its_closed_form(float64):
    w = torch.tensor([[1.0, 0.3, -0.2], [0.2, 0.8, 0.1], [0.4, -0.5, 0.9], [0.1, 0.2, 0.3]])
    x = torch.tensor([[0.5, -0.3, 1.2, 0.4], [1.5, 0.3, -0.8, 0.0]])

    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, 0.2).to_event(1), obs=x)

    exact_log_evidence = dist.MultivariateNormal(torch.zeros(4), w @ w.T + 0.04 * torch.eye(4)) \
        .log_prob(x)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=8, step_size=0.2)
    _, stats = kernel.sample_chains(x, num_chains=4, num_draws=250, warmup_steps=300, thin=2)
    error = (stats["log_marginal_likelihood"] - exact_log_evidence).abs()
    assert (error <= 3 * stats["log_marginal_likelihood_mcse"] + 0.05).all(), \
        (stats["log_marginal_likelihood"], exact_log_evidence,
         stats["log_marginal_likelihood_mcse"])
    assert stats["beta"].shape == (8, 2) and (stats["beta"][-1] == 0).all()
    assert stats["level_log_likelihood"].shape == (4, 250, 8, 2)


def test_evidence_of_an_enumerable_spike_and_slab_model_against_its_gates(float64):
    w, x = problem(pixels=6, dim=4, images=3, seed=1)
    _, _, exact_log_evidence = exact(w, x)
    kernel = ShortRunLangevin(make_model(w), metropolis=True, tempering=10)
    _, stats = kernel.sample_chains(x, num_chains=4, num_draws=250, warmup_steps=400, thin=2)
    error = (stats["log_marginal_likelihood"] - exact_log_evidence).abs()
    assert (error <= 3 * stats["log_marginal_likelihood_mcse"] + 0.05).all(), \
        (stats["log_marginal_likelihood"], exact_log_evidence,
         stats["log_marginal_likelihood_mcse"])


def test_no_evidence_without_a_level_at_beta_zero(float64):
    w, x, model = _two_twins(2)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=[1.0, 0.5, 0.1])
    samples, stats = kernel.sample_chains(x, num_chains=2, num_draws=5, warmup_steps=10)
    assert stats["log_marginal_likelihood"].isnan().all()
    assert stats["log_marginal_likelihood_mcse"].isnan().all()
    assert samples["z"].shape == (2, 5, 2, 2) and stats["log_density"].shape == (2, 5, 2)
    assert stats["round_trips"].shape == (2, 2) and stats["swap_accept_prob"].shape == (2, 2)


def test_beta_is_an_input_of_the_derived_graph(float64):
    # One graph derived at the first ladder, run at a second one, against the model's own
    # trace at each (a fresh kernel per ladder): a beta folded into the graph would differ.
    w, x, model = _two_twins(3)
    fast = ShortRunLangevin(model, metropolis=True, tempering=3)
    rows = 3 * 2
    outputs = []
    for beta in (tempering.default_ladder(3, 3), torch.tensor([[1.0] * 3, [0.2] * 3, [0.0] * 3])):
        results = []
        slow = ShortRunLangevin(model, metropolis=True, tempering=3, derive=False)
        for kernel in (fast, slow):
            target = kernel.target((x,), {}, rows)
            step = kernel.transition(target, (x,), {}, tempered=True)
            torch.manual_seed(3)
            state = step.start(torch.randn(rows, 3, 2), torch.zeros(rows, 0),
                               tempering.rows(beta, 2))
            randoms = Randoms(torch.randn(rows, 3, 2), torch.rand(rows, 3).log())
            ladder = tempering.Ladder(beta, torch.rand(2, 2, 3).log(), torch.tensor(0),
                                      torch.zeros(3, 2, 3, dtype=torch.long))
            results.append(step.step(state, randoms, torch.full((rows, 3), 0.3),
                                     torch.full((rows,), 0.3), ladder))
        graph = next(iter(fast._transitions.values()))
        outputs.append((results, graph.graph_step))
        for name in ("local", "grad"):
            assert torch.allclose(getattr(results[0][0].density, name),
                                  getattr(results[1][0].density, name), rtol=1e-9), name
        moved = results[0][0]
        plain = target.density(moved.position, moved.global_position)  # untempered
        expected = plain.local - plain.observed + tempering.rows(beta, 2) * plain.observed
        assert torch.allclose(moved.density.local, expected, rtol=1e-9)
    (first, graph_a), (second, graph_b) = outputs
    assert graph_a is graph_b is not None  # the same graph, a new ladder
    assert not torch.allclose(first[0][0].density.local, second[0][0].density.local)


def test_tempering_is_refused_in_one_line_where_it_cannot_be_per_image():
    def with_global(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, scale))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def observed_outside(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        pyro.sample("total", dist.Normal(0.0, 10.0), obs=x.sum())

    x = torch.randn(3)
    for model, words in ((with_global, "global block"), (observed_outside, "observed site")):
        kernel = ShortRunLangevin(model, metropolis=True, tempering=3)
        with pytest.raises(ValueError, match=words) as caught:
            kernel.sample_chains(x, num_chains=2, num_draws=2, warmup_steps=2)
        assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="sample_chains"):
        mcmc = pyro.infer.MCMC(ShortRunLangevin(make_model(torch.eye(2)), metropolis=True,
                                                tempering=3), num_samples=2, warmup_steps=2)
        mcmc.run(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="metropolis"):
        ShortRunLangevin(make_model(torch.eye(2)), tempering=3)
    with pytest.raises(ValueError, match="decrease"):
        ShortRunLangevin(make_model(torch.eye(2)), metropolis=True, tempering=[1.0, 0.5, 0.7]) \
            .sample_chains(torch.zeros(1, 2), num_chains=1, num_draws=1, warmup_steps=0)


def test_the_explaining_away_posterior_from_over_dispersed_starts(float64):
    # Issue 20's model (tests/explaining_away.py) on four of its images: exact answers by
    # enumerating the 1,024 gate patterns; chains from prior draws. Untempered, each chain
    # keeps the twin it started with; the ladders trade them. (The full figures, on all 16
    # images at the longer defaults, come from benchmarks/explaining_away.py.)
    w, x = problem()
    x = x[1:5]
    inclusion, small, _ = exact(w, x)
    errors = {}
    for name, levels in (("plain", None), ("tempered", 12)):
        torch.manual_seed(1)
        # "plain": the sampler before issue 20 (MALA and the crossing move, no pair move)
        kernel = ShortRunLangevin(make_model(w), metropolis=True, tempering=levels,
                                  pair_move=None if levels else False)
        samples, _ = kernel.sample_chains(x, num_chains=4, num_draws=150, warmup_steps=400,
                                          thin=5)
        inc, sm = estimates(samples)
        errors[name] = float(torch.maximum((inc - inclusion).abs(), (sm - small).abs()).max())
    assert errors["tempered"] <= TEMPERED_MAX_ERROR and errors["plain"] >= PLAIN_MIN_ERROR, \
        errors


@pytest.mark.parametrize("refresh", [True, False])
def test_the_hottest_level_at_beta_zero_is_a_fresh_prior_draw_every_transition(float64,
                                                                              refresh):
    # At beta = 0 the target is the prior: with prior_refresh the hottest level's state is an
    # independent prior draw after every transition (its log-likelihood uncorrelated from one
    # transition to the next, its mean the prior's); without, a Langevin chain's (correlated).
    w, x, _ = _two_twins(32)
    model = _noise_model(w, 0.3)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=[1.0, 0.0], adapt_ladder=False,
                              step_size=0.05, prior_refresh=refresh)
    _, stats = kernel.sample_chains(x, num_chains=2, num_draws=300, warmup_steps=50)
    hot = stats["level_log_likelihood"][:, :, 1]  # [K, S, N]
    centred = hot - hot.mean(1, keepdim=True)
    lag1 = float((centred[:, 1:] * centred[:, :-1]).mean() / centred.pow(2).mean())
    if refresh:
        assert abs(lag1) < 0.1, lag1
        expected = _mean_log_likelihood(w, x[0], 0.0, noise=0.3)
        assert float(hot.mean()) == pytest.approx(float(expected), rel=0.05)
    else:
        assert lag1 > 0.5, lag1


def test_the_pair_moves_other_side_pick_keeps_the_law_of_the_value_permutations(float64):
    # Pair moves alone permute a chain's values: on the 24 orders of four values (two in the
    # slab, two in the spike: the other-side pick is taken half the time) their stationary law
    # must be the target's, normalised over the orders. 20,000 chains x 60 moves; exact
    # probabilities by enumeration.
    import itertools

    from pyro_sparsegen.infer.core import (Options, density_from_log_prob, draw_randoms,
                                           langevin_init, pair_step)

    torch.manual_seed(0)
    values = torch.tensor([1.3, 0.05, -0.7, -0.1])
    weights = torch.tensor([0.9, -1.6, 0.4, 2.0])
    quad = torch.tensor([[1.0, 0.3, 0.0, -0.4], [0.3, 0.6, 0.2, 0.0], [0.0, 0.2, 0.8, 0.5],
                         [-0.4, 0.0, 0.5, 1.2]])

    def log_p(z):
        return z @ weights - 0.5 * ((z @ quad) * z).sum(-1)

    density = density_from_log_prob(log_p)
    index = torch.arange(4)
    sites = (index, torch.tensor([0, 0, 0, 0]), torch.tensor([4, 4, 4, 4]))
    orders = torch.tensor(list(itertools.permutations(range(4))))
    exact = torch.softmax(log_p(values[orders]), 0)
    state = langevin_init(values.expand(20000, 1, 4).clone(), density)
    options = Options(metropolis=True, pairs=True)
    for _ in range(60):
        r = draw_randoms(state, options, None, False, sites)
        state, _, _ = pair_step(state, density, r.pair_first, r.pair_second, r.pair_log_u,
                                r.pair_opposite, r.pair_scores, r.pair_index)
    z = state.position.reshape(-1, 4)
    found = (z.unsqueeze(1) == values[orders].unsqueeze(0)).all(-1).double().mean(0)
    assert float(found.sum()) == pytest.approx(1.0)  # the values only move around
    assert torch.allclose(found, exact, atol=0.01), (found, exact)
    # the pick was used: with it forced, a spike value and a slab value trade every time
    r = draw_randoms(state, options, None, False, sites)
    forced, _, _ = pair_step(state, lambda *a: density(*a), r.pair_first, r.pair_second,
                             torch.full_like(r.pair_log_u, -math.inf),
                             torch.ones_like(r.pair_opposite), r.pair_scores, r.pair_index)
    moved = forced.position != state.position
    assert bool((moved.sum(-1) == 2).all())  # every chain swapped two values...
    assert bool(((forced.position.abs() > 0.2) != (state.position.abs() > 0.2))[moved].all())


def _twin_posterior_draws(n, noise=0.1):
    """Exact draws ``[n, 2]`` from the two-twins posterior (one image), with its log density:
    a gate pattern by its posterior probability, then the Gaussian given the gates."""
    w, x, _ = _two_twins(1)
    x = x[0]
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
    var = torch.where(patterns > 0, 1.0, 0.05 ** 2)
    log_prior = (patterns * math.log(0.3) + (1 - patterns) * math.log(0.7)).sum(-1)
    cov = (w * var[:, None, :]) @ w.T + noise ** 2 * torch.eye(2)
    post = (dist.MultivariateNormal(torch.zeros(2), cov).log_prob(x) + log_prior).softmax(0)
    v = torch.linalg.inv(torch.diag_embed(1 / var) + w.T @ w / noise ** 2)
    m = torch.einsum("pij,j->pi", v, w.T @ x / noise ** 2)
    gates = torch.distributions.Categorical(post).sample((n,))
    z = m[gates] + (torch.linalg.cholesky(v)[gates] @ torch.randn(n, 2, 1)).squeeze(-1)

    def log_p(z):
        return SpikeAndSlab(0.3, 1.0, 0.05).log_prob(z).sum(-1) + \
            dist.Normal(z @ w.T, noise).log_prob(x).sum(-1)

    return z, log_p


def test_the_learned_pair_moves_keep_exact_draws_exact(float64):
    # Stationarity of the pair move's learned branch alone (the transfer z_j += t, z_k -= t and
    # the compensated crossing): 40,000 exact posterior draws of two twins (their images depend
    # on the sum, which both moves keep, so these moves alone trade the explanation) stay
    # exact after 20 moves each: the slab fractions and the moments against the draws'.
    from pyro_sparsegen.infer.core import (Options, density_from_log_prob, draw_randoms,
                                           langevin_init, pair_step)

    torch.manual_seed(0)
    z, log_p = _twin_posterior_draws(40000)
    plain = density_from_log_prob(log_p)

    def density(position, global_position):  # the crossing move's scale ratio (slab / spike)
        d = plain(position, global_position)
        return d._replace(log_scale_ratio=torch.full_like(position, math.log(1.0 / 0.05)))

    sites = (torch.arange(2), torch.zeros(2, dtype=torch.long), torch.full((2,), 2))
    pick = (torch.tensor([[0.0, 0.5, 1.0, 1.0]]), torch.full((1, 4), 0.8))  # (0, 1), (1, 0)
    options = Options(metropolis=True, pairs=True, crossing=True)
    state = langevin_init(z.reshape(-1, 1, 2).clone(), density)
    moved = torch.zeros(z.shape[0], dtype=torch.bool)
    for _ in range(20):
        r = draw_randoms(state, options, None, False, sites, pick)
        before = state.position
        state, _, _ = pair_step(state, density, r.pair_first, r.pair_second, r.pair_log_u,
                                torch.zeros_like(r.pair_opposite), r.pair_scores, r.pair_index,
                                r.pair_shift, r.pair_cross)
        moved |= (state.position != before).any(-1).reshape(-1)
    after = state.position.reshape(-1, 2)
    assert float(moved.double().mean()) > 0.5  # the moves were taken
    for f in (lambda v: (v.abs() > 0.2).double(), lambda v: v, lambda v: v ** 2,
              lambda v: v.prod(-1, keepdim=True)):
        a, b = f(after), f(z)
        se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se).all(), (a.mean(0), b.mean(0), se)


def test_the_pair_pick_learns_the_twins_and_their_ridge():
    from pyro_sparsegen.infer.adaptation import PairPick

    torch.manual_seed(0)
    sites = (torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.long), torch.full((3,), 3))
    pairs = PairPick(sites, 2, torch.float64, "cpu")
    assert pairs.pick() is None  # nothing recorded yet
    s = 0.01 * torch.randn(4000, 2, dtype=torch.float64)
    d = torch.randn(4000, 2, dtype=torch.float64)
    # coordinates 0 and 1 share their sum (z0 + z1 = 2 s, nearly fixed; z0 - z1 = 2 d): twins
    position = torch.stack([s + d, s - d, torch.randn(4000, 2, dtype=torch.float64)], -1)
    for chunk in position.split(500):
        pairs.record(chunk)
    cdf, scale = pairs.pick()
    prob = torch.diff(cdf, prepend=cdf.new_zeros(2, 1)).reshape(2, 3, 3)
    assert torch.allclose(prob.diagonal(dim1=-2, dim2=-1), torch.zeros(2, 3, dtype=prob.dtype))
    # half uniform over the six ordered pairs, half on the one anticorrelated pair
    assert torch.allclose(prob[:, 0, 1], torch.full_like(prob[:, 0, 1], 0.5 / 6 + 0.25),
                          atol=0.02)
    assert torch.allclose(prob[:, 0, 2], torch.full_like(prob[:, 0, 2], 0.5 / 6), atol=0.02)
    assert torch.allclose(prob, prob.transpose(-1, -2))  # symmetric
    grid = scale.reshape(2, 3, 3)
    assert torch.allclose(grid, grid.transpose(-1, -2))  # symmetric: the transfer is exact
    # the transfer's scale: 1.19 sd(z0 - z1) = 1.19 * 2
    assert torch.allclose(scale.reshape(2, 3, 3)[:, 0, 1],
                          torch.full((2,), 2.38, dtype=torch.float64), rtol=0.05)


def test_the_derived_graph_follows_a_new_layout_of_the_random_inputs(float64):
    # The learned pick arrives in the middle of the warm-up and adds the transfer's inputs: a
    # graph traced before must not ignore them (traced anew), so a derived run draws what an
    # eager one draws.
    w, x = problem()
    out = {}
    for derive in (True, False):
        torch.manual_seed(3)
        kernel = ShortRunLangevin(make_model(w), metropolis=True, derive=derive)
        samples, _ = kernel.sample_chains(x[:2], num_chains=2, num_draws=20, warmup_steps=200,
                                          thin=2)
        out[derive] = samples["z"]
    assert torch.allclose(out[True], out[False], atol=1e-8)
