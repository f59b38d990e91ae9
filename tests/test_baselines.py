import csv
import os

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_sparsegen import MLPGenerator, ShortRunLangevin, SparseGenerator, diagnostics
from pyro_sparsegen.baselines import (KINDS, VSC, BetaVAE, EarlyStopping, RelaxedSpikeAndSlab,
                                      VSCLoss, dense_config, plateau, recommended,
                                      train_baseline)
from pyro_sparsegen.config import ConfigError, TrainConfig
from pyro_sparsegen.builders import build_model, load_run
from pyro_sparsegen.encoding import CodeInference, infer_codes, make_inference
from pyro_sparsegen.monitor import evaluate
from pyro_sparsegen.training import train
from test_training import tiny_data  # the same tiny data set as the training tests

CLASSES = {"beta_vae": BetaVAE, "vsc": VSC}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: two threads on a shared machine are several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    yield
    torch.set_num_threads(threads)


def tiny_config(epochs=2):
    return TrainConfig.from_dict({
        "data": {"spec": "tiny"},
        "network": {"latent_dim": 4, "hidden": [16]},
        "langevin": {"num_steps": 5, "step_size": 0.1},
        "optim": {"batch_size": 16, "epochs": epochs, "lr": 0.01},
        "device": "cpu",
    })


def tiny_model(kind, dtype=torch.float32, **options):
    options.setdefault("encoder_hidden", (16,))
    return CLASSES[kind](MLPGenerator(4, (1, 8, 8), hidden=(16,)), **options).to(dtype)


def images(n=12, dtype=torch.float32):
    return tiny_data().images(limit=n).to(dtype)


def run(kind, out, **kwargs):
    data = tiny_data()
    kwargs.setdefault("encoder_hidden", (16,))
    return train_baseline(kind, kwargs.pop("config", tiny_config()), out,
                          train_data=data.subset(range(32)),
                          test_data=data.subset(range(32, 48)), progress=False, **kwargs)


# -- model and guide -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_model_and_guide_sites(kind, device):
    model = tiny_model(kind).to(device)
    x = images().to(device)
    assert isinstance(model, SparseGenerator) and model.latent_dim == 4
    trace = pyro.poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (12, 4)
    assert trace.nodes["z"]["fn"].event_shape == (4,)
    assert trace.nodes["x"]["is_observed"]
    assert trace.nodes["images"]["type"] == "sample"  # the plate
    guide = pyro.poutine.trace(model.guide).get_trace(x)
    z = guide.nodes["z"]
    assert z["value"].shape == (12, 4) and z["fn"].event_shape == (4,)
    assert z["value"].requires_grad  # reparameterised
    log_density, log_lik = ShortRunLangevin(model).log_density({"z": z["value"]}, x)
    assert log_density.shape == log_lik.shape == (12,)
    assert model.encode(x).shape == (12, 4)
    generated, codes = model.generate(3)
    assert generated.shape == (3, 1, 8, 8) and codes.shape == (3, 4)
    with pytest.raises(ValueError, match="needs the images"):
        model.guide(num_images=3)


def test_beta_vae_prior_and_inclusion():
    model = tiny_model("beta_vae")
    z = torch.randn(5, 4)
    expected = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(model._latent_dist().log_prob(z), expected)
    with pytest.raises(NotImplementedError):
        model.inclusion_probability(z)
    assert torch.equal(model.encode(images()), model.encoder(images())[0])


def test_vsc_encode_has_exact_zeros():
    model = tiny_model("vsc", warmup_iterations=0)
    last = model.encoder.net[-1]
    with torch.no_grad():  # the gate head: coordinates 0 and 2 on, 1 and 3 off
        last.weight[8:].zero_()
        last.bias[8:] = torch.tensor([5.0, -5.0, 5.0, -5.0])
    x = images()
    z = model.encode(x)
    mean = model.encoder(x)[0]
    assert (z[:, [1, 3]] == 0).all()
    assert torch.equal(z[:, [0, 2]], mean[:, [0, 2]])
    gamma = model.slab_probability(x)
    assert ((gamma >= 0.5) == torch.tensor([True, False, True, False])).all()
    # the model prior's inclusion probability agrees with the gates on encoded codes: it is
    # >= 0.5 exactly where |z| leaves the narrow spike, at |z| >= t (~0.043 here)
    a, s = model.alpha, model.spike_scale
    t = (2 * (np.log((1 - a) / a) - np.log(s)) / (1 / s**2 - 1)) ** 0.5
    assert torch.equal(model.inclusion_probability(z) >= 0.5, z.abs() >= t)
    assert model.inclusion_probability(torch.zeros(1)).item() < 1e-3
    codes = infer_codes(model, tiny_data(), CodeInference(model, None))
    assert codes["z"].shape == (48, 4) and (codes["z"][:, [1, 3]] == 0).all()


def test_vsc_warmup_and_sharpness_schedule():
    model = tiny_model("vsc", c_start=50.0, c_end=200.0, warmup_iterations=10,
                       anneal_iterations=100)
    expected = {0: (50.0, 0.0), 5: (57.5, 0.5), 10: (65.0, 1.0), 50: (125.0, 1.0),
                100: (200.0, 1.0), 1000: (200.0, 1.0)}
    x = images(4)
    for iteration, (c, lam) in expected.items():
        model.iteration = iteration
        assert model.sharpness == pytest.approx(c) and model.warmup_factor == pytest.approx(lam)
        assert model.annealing_state() == {"sharpness": pytest.approx(c),
                                           "warmup": pytest.approx(lam)}
        q = pyro.poutine.trace(model.guide).get_trace(x).nodes["z"]["fn"]
        assert q.sharpness == pytest.approx(c)
    model.iteration = 0  # at the start of the warm-up only the gates carry information
    gamma, loc, scale = model.recognition(x)
    assert (loc == 0).all() and (scale == 1).all()
    assert (model.encode(x) == 0).all()


# -- losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_svi_decreases_the_loss(kind):
    torch.manual_seed(1)
    model = tiny_model(kind, **({"warmup_iterations": 0} if kind == "vsc" else {}))
    x = images(32)
    svi = pyro.infer.SVI(model, model.guide, pyro.optim.Adam({"lr": 0.01}), loss=model.loss())
    losses = [svi.step(x) for _ in range(60)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.05 * abs(np.mean(losses[:10]))


def test_beta_scales_the_kl():
    x = images(dtype=torch.float64)
    one = tiny_model("beta_vae", torch.float64, beta=1.0)
    four = tiny_model("beta_vae", torch.float64, beta=4.0)
    four.load_state_dict(one.state_dict())
    losses = []
    for model in (one, four):
        torch.manual_seed(3)
        losses.append(model.loss()(model, model.guide, x))
    loc, scale = one.recognition(x)
    kl = kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum()
    assert (losses[1] - losses[0]).item() == pytest.approx(3 * kl.item(), rel=1e-10)
    # and β = 1 is the plain ELBO, whose KL term Pyro computes analytically
    torch.manual_seed(3)
    plain = pyro.infer.TraceMeanField_ELBO().differentiable_loss(one, one.guide, x)
    assert plain.item() == pytest.approx(losses[0].item(), rel=1e-12)


def test_vsc_kl_matches_monte_carlo():
    torch.manual_seed(0)
    gamma = torch.tensor([0.9, 0.3, 0.02], dtype=torch.float64)
    loc = torch.tensor([1.2, -0.5, 0.1], dtype=torch.float64)
    scale = torch.tensor([0.4, 1.5, 0.2], dtype=torch.float64)
    alpha = 0.1
    q = RelaxedSpikeAndSlab(loc, scale, gamma)
    n = 400_000
    on = torch.rand(n, 3, dtype=torch.float64) < gamma
    z = loc + scale * torch.randn(n, 3, dtype=torch.float64)
    log_q = torch.where(on, gamma.log() + dist.Normal(loc, scale).log_prob(z),
                        torch.log1p(-gamma))
    log_p = torch.where(on, np.log(alpha) + dist.Normal(0.0, 1.0).log_prob(z),
                        np.log1p(-alpha))
    estimate = (log_q - log_p).mean(0)
    stderr = (log_q - log_p).std(0) / n**0.5
    exact = torch.stack([RelaxedSpikeAndSlab(loc[j:j + 1], scale[j:j + 1], gamma[j:j + 1])
                         .kl_to_spike_and_slab(alpha) for j in range(3)]).squeeze(-1)
    assert torch.allclose(exact.sum(), q.kl_to_spike_and_slab(alpha))
    assert ((estimate - exact).abs() < 5 * stderr + 1e-9).all()
    by_logits = RelaxedSpikeAndSlab(loc, scale, slab_logits=torch.logit(gamma))
    assert torch.allclose(by_logits.kl_to_spike_and_slab(alpha), q.kl_to_spike_and_slab(alpha))


def test_vsc_kl_gradient_stays_finite_where_the_gate_saturates():
    logits = torch.tensor([-120.0, -5.0, 0.0, 20.0, 120.0], requires_grad=True)
    q = RelaxedSpikeAndSlab(torch.zeros(5), torch.ones(5), slab_logits=logits)
    assert q.slab_probs[-1] == 1 and q.slab_probs[0] == 0  # rounded in float32
    kl = q.kl_to_spike_and_slab(0.01)
    kl.backward()
    assert torch.isfinite(kl) and torch.isfinite(logits.grad).all()


def test_relaxed_spike_and_slab_draws():
    q = RelaxedSpikeAndSlab(torch.full((3,), 2.0), torch.full((3,), 1e-3),
                            torch.tensor([1.0, 0.0, 0.5]), sharpness=200.0)
    hard = q.sample((2000,))
    assert (hard[:, 1] == 0).all() and (hard[:, 0] != 0).all()
    assert (hard[:, 2] == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    soft = q.rsample((2000,))
    # the sigmoid gate is soft only for u within a few 1/c of its threshold 1 - gamma
    assert (soft[:, 0] - 2.0).abs().gt(0.1).float().mean() < 0.03
    assert soft[:, 1].abs().gt(0.1).float().mean() < 0.03
    assert q.expand((5,)).sample().shape == (5, 3)
    assert torch.allclose(q.mean, torch.tensor([2.0, 0.0, 1.0]))
    with pytest.raises(NotImplementedError):
        q.log_prob(hard)
    with pytest.raises(ValueError, match="exactly one"):
        RelaxedSpikeAndSlab(torch.zeros(3), torch.ones(3))


def test_vsc_loss_terms():
    torch.manual_seed(0)
    model = tiny_model("vsc", torch.float64, alpha=0.05, warmup_iterations=10)
    x = images(dtype=torch.float64)
    torch.manual_seed(5)
    loss = VSCLoss()(model, model.guide, x)
    torch.manual_seed(5)
    trace = pyro.poutine.trace(model.guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    gamma, loc, scale = model.recognition(x)
    log_lik = model.likelihood(z).log_prob(x).sum()
    kl = trace.nodes["z"]["fn"].kl_to_spike_and_slab(0.05).sum()
    assert loss.item() == pytest.approx((kl - log_lik).item(), rel=1e-12)
    # during the warm-up's start the slab matches the prior: only the gates' KL is left
    g = gamma
    gates = (g * (g / 0.05).log() + (1 - g) * ((1 - g) / 0.95).log()).sum()
    assert kl.item() == pytest.approx(gates.item(), rel=1e-10)


# -- training loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_train_baseline_writes_a_run(kind, tmp_path):
    result = run(kind, tmp_path)
    assert not result.interrupted and len(result.metrics) == 2
    assert type(result.model) is CLASSES[kind] and result.model.iteration == 4
    for name in ("checkpoint.h5", "metrics.csv", "training_curves.png", "reconstructions.png",
                 "samples.png", "code_usage.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("iteration", "train_mse", "test_mse", "zeroed_mse", "zeroed_mse_inclusion",
                "inactive_fraction_threshold", "inactive_fraction_inclusion", "log_joint",
                "slab_weight", "spike_scale", "train_loss", "seconds"):
        assert key in rows[-1], key
    for key in ("train_mse", "test_mse", "zeroed_mse", "log_joint", "train_loss"):
        assert np.isfinite(float(rows[-1][key])), key
    inclusion = float(rows[-1]["inactive_fraction_inclusion"])
    assert np.isnan(inclusion) if kind == "beta_vae" else 0 <= inclusion <= 1

    model, config, state = load_run(tmp_path)
    assert type(model) is CLASSES[kind] and model.iteration == 4
    assert state.extra == {"baseline": kind} and config.to_dict() == tiny_config().to_dict()
    assert model.checkpoint_options() == result.model.checkpoint_options()
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    data = tiny_data()
    x = data.images(limit=8)
    assert torch.equal(model.encode(x), result.model.encode(x))
    codes = infer_codes(model, data, make_inference(model, config), limit=20)
    assert codes["z"].shape == (20, 4) and codes["mse"].shape == (20,)
    figures = evaluate(model, data, CodeInference(model, None), threshold=config.threshold)
    assert np.isfinite(figures["test_mse"])


def test_vsc_options_and_resume_are_exact(tmp_path):
    options = {"alpha": 0.05, "c_start": 20.0, "warmup_iterations": 2}
    straight = run("vsc", tmp_path / "a", figures=False, **options).model
    assert straight.alpha == 0.05 and straight.c_start == 20.0
    assert straight.anneal_iterations == 4  # sized to the run
    run("vsc", tmp_path / "b", stop_after=1, **options)
    assert load_run(tmp_path / "b")[0].iteration == 2
    resumed = run("vsc", tmp_path / "b", resume=True, figures=False)
    assert len(resumed.metrics) == 2 and resumed.model.iteration == 4
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(ConfigError, match="alpha"):
        run("vsc", tmp_path / "b", resume=True, alpha=0.5)
    with pytest.raises(ConfigError, match="VSC"):
        run("beta_vae", tmp_path / "b", resume=True)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        run("vae", tmp_path)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        run("beta_vae", tmp_path, alpha=0.1)
    for kind, options in (("beta_vae", {"beta": -1.0}), ("vsc", {"alpha": 1.0}),
                          ("vsc", {"c_end": 0.0}), ("vsc", {"warmup_iterations": -1}),
                          ("vsc", {"encoder_hidden": (0,)})):
        with pytest.raises(ValueError):
            tiny_model(kind, **options)


def test_langevin_analyses_run_on_the_baselines():
    for kind in KINDS:
        model = tiny_model(kind)
        idata = diagnostics.sample_posterior(model, images(3), chains=2, draws=4, warmup=3)
        assert idata.posterior["z"].shape == (2, 4, 3, 4)
        assert ("inclusion_probability" in idata.posterior) == (kind == "vsc")


def test_dense_config():
    config = tiny_config()
    config.prior.preset, config.prior.final_slab_weight = "authors", 0.01
    dense = dense_config(config)
    assert dense.prior.preset == "dense" and dense.prior.final_slab_weight is None
    assert dense.network.latent_dim == 4 and config.prior.preset == "authors"
    matched = dense_config(config, latent_dim=2)
    assert matched.network.latent_dim == 2 and config.network.latent_dim == 4
    assert build_model(matched, (1, 8, 8), 2).schedule.is_dense
    # the default preset's shape is the sparse recipe's: the dense model drops it
    config.prior.preset, config.prior.dense_fraction, config.prior.slab_scale = "default", 0.3, 2.
    dense = dense_config(config)
    assert (dense.prior.dense_fraction, dense.prior.slab_scale) == (None, None)
    assert build_model(dense, (1, 8, 8), 2).schedule.is_dense


def test_dense_abp_baseline_trains(tmp_path):
    data = tiny_data()
    result = train(dense_config(tiny_config(epochs=1), latent_dim=3), tmp_path,
                   train_data=data.subset(range(32)), test_data=data.subset(range(32, 48)),
                   progress=False, figures=False)
    assert result.model.latent_dim == 3 and result.model.prior_params().slab_weight == 1.0


# -- the baselines' own recommended training: early stopping on a validation ELBO ------------
def test_recommended_settings():
    config = tiny_config(epochs=7)
    for kind in KINDS:
        fair, stopping, options = recommended(kind, config, max_epochs=5)
        assert (fair.optim.lr, fair.optim.beta1, fair.optim.beta2) == (1e-3, 0.9, 0.999)
        assert stopping.max_epochs == 7  # never fewer epochs than the ABP models get
        assert fair.optim.epochs == 7 and config.optim.lr == 0.01  # config left unchanged
        assert options == ({"beta": 1.0} if kind == "beta_vae" else
                           {"alpha": 0.01, "c_start": 50.0, "c_end": 200.0})
    # an amortised model uses neither the prior schedule nor the Langevin settings: a sparse
    # recipe under test leaves its run (and its analyses request) as it is
    tuned = tiny_config(epochs=7)
    tuned.prior.final_slab_weight, tuned.prior.slab_scale = 0.5, 1.5
    tuned.langevin.num_steps, tuned.langevin.step_size = 60, 0.1
    for kind in KINDS:
        assert recommended(kind, tuned)[0].to_dict() == recommended(kind, config)[0].to_dict()


@pytest.mark.parametrize("losses, min_epochs, expected", [
    ([5, 4, 3, 2], 1, (0, False)),  # improving: no drop
    ([5, 5, 5], 1, (1, False)),  # one plateau of patience 2: the rate drops
    ([5, 5, 5, 5, 5], 1, (1, True)),  # a second plateau after the drop: stop
    ([5, 5, 5, 5, 5], 6, (0, False)),  # never before the minimum number of epochs
    ([5, 5, 5, 4, 4], 1, (1, False)),  # an improvement after the drop resets the count
])
def test_plateau_rule(losses, min_epochs, expected):
    assert plateau(losses, min_epochs, EarlyStopping(patience=2)) == expected


def test_early_stopping_drops_the_rate_then_stops(tmp_path):
    # min_delta 0.9: nothing counts as an improvement, so epoch 2 drops the rate, epoch 3 stops
    stopping = EarlyStopping(max_epochs=10, patience=1, min_delta=0.9, validation_fraction=0.5)
    result = run("beta_vae", tmp_path, config=tiny_config(epochs=2), early_stopping=stopping)
    rates = [row["lr"] for row in result.metrics]
    assert rates == pytest.approx([0.01, 0.01, 0.001])
    assert all(np.isfinite(row["val_loss"]) for row in result.metrics)
    assert result.model.iteration == 3 * 1  # 32 images, 16 held out: one batch of 16 per epoch
    model, config, state = load_run(tmp_path)
    assert config.optim.epochs == 3 and model.iteration == 3
    assert state.extra["early_stopping"]["stopped"] is True
    assert os.path.getsize(tmp_path / "samples.png") > 0


def test_early_stopping_resumes_exactly(tmp_path):
    stopping = {"max_epochs": 4, "patience": 1, "min_delta": 0.9}
    straight = run("vsc", tmp_path / "a", early_stopping=stopping, figures=False).model
    # stopped after epoch 2, where the first plateau is due: the resumed run must drop the rate
    run("vsc", tmp_path / "b", early_stopping=stopping, stop_after=2)
    resumed = run("vsc", tmp_path / "b", early_stopping=stopping, resume=True, figures=False)
    assert resumed.model.iteration == straight.iteration
    assert [row["lr"] for row in resumed.metrics] == pytest.approx([0.01, 0.01, 0.001])
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(ConfigError, match="early_stopping"):
        run("vsc", tmp_path / "b", resume=True)
    with pytest.raises(ConfigError, match="patience"):
        run("vsc", tmp_path / "c", early_stopping={"patience": 0})
