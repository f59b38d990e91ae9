"""The default recipe: the likelihood scale's size rule, the generator's column-norm constraint,
the named recipes (the first release's kept as ``v1``) and the baselines left without the
sparse recipe's constraint."""

import math

import pyro
import pytest
import torch

import pyro_sparsegen as psg
from pyro_sparsegen import baselines, builders
from pyro_sparsegen.cli import main
from pyro_sparsegen.config import RECIPES, ConfigError, TrainConfig, likelihood_scale


@pytest.mark.parametrize("side, sigma", [(8, 0.0857), (14, 0.15), (28, 0.3)])
def test_the_default_likelihood_scale_follows_the_image_size(side, sigma):
    # the rule 0.3 * sqrt(pixels / 784): the authors' 0.3 at 28 x 28, the same strength of the
    # whole image's likelihood elsewhere
    config = TrainConfig()
    shape = (1, side, side)
    model = builders.build_model(config, shape, 10)
    assert model.noise_scale == pytest.approx(sigma, abs=5e-5)
    assert likelihood_scale(None, shape) == pytest.approx(sigma, abs=5e-5)
    # the baselines use the same rule (β-VAE and VSC build their decoders from the config)
    vae = baselines.build_baseline("beta_vae", baselines.recommended("beta_vae", config)[0],
                                   shape, 10)
    assert vae.noise_scale == pytest.approx(sigma, abs=5e-5)
    # an explicit scale wins over the rule
    config.network.noise_scale = 0.3
    assert builders.build_model(config, shape, 10).noise_scale == 0.3


def test_resized_data_trains_at_its_size(tmp_path):
    config = TrainConfig()
    config.data.spec, config.data.image_size, config.device = "digits", 14, "cpu"
    config.optim.epochs, config.data.eval_images = 1, 20
    config.network.latent_dim, config.network.hidden = 4, (8,)
    result = psg.train(config, tmp_path / "run", progress=False, figures=False,
                       stop_after=2)
    assert tuple(result.model.image_shape) == (1, 14, 14)
    assert result.model.noise_scale == pytest.approx(0.15)


def test_the_recipes_default_and_v1():
    default = TrainConfig()
    per_epoch = 50
    end = default.build_schedule(per_epoch)
    assert end(end.end).slab_weight == pytest.approx(0.8)
    assert default.network.input_norm == 3.0 and default.network.noise_scale is None
    v1 = TrainConfig.recipe("v1")
    old = v1.build_schedule(per_epoch)
    assert old(old.end).slab_weight == pytest.approx(0.5)
    assert old(old.end).spike_scale == pytest.approx(end(end.end).spike_scale)
    assert v1.network.input_norm is None and v1.network.noise_scale == 0.3
    # at 8 x 8 the first release's fixed sigma stays 0.3
    assert builders.build_model(v1, (1, 8, 8), 10).noise_scale == 0.3
    assert set(RECIPES) == {"default", "v1"}
    assert TrainConfig.recipe("default").to_dict() == default.to_dict()
    with pytest.raises(ConfigError, match="unknown recipe 'v3'"):
        TrainConfig.recipe("v3")


def _column_norms(network):
    return network.net[0].weight.norm(dim=0)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_the_first_layer_keeps_its_column_norms_through_learning(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net = psg.MLPGenerator(6, (1, 8, 8), hidden=(16,), input_norm=2.5)
        first = net.net[0]
    else:
        net = psg.ConvGenerator(6, (1, 8, 8), width=4, input_norm=2.5)
        first = net.project[0]
    model = psg.SparseGenerator(net, noise_scale=0.1)
    kernel = psg.ShortRunLangevin(model, step_size=0.05, num_steps=5, noise=False)
    abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 0.05}), num_data=32)
    x = torch.rand(32, 1, 8, 8)
    before = first.weight.detach().clone()
    for _ in range(5):
        abp.step(x)
    assert not torch.allclose(first.weight, before)  # it learns ...
    norms = first.weight.norm(dim=0)
    assert torch.allclose(norms, torch.full_like(norms, 2.5), atol=1e-5)  # ... on the sphere
    assert net.config()["input_norm"] == 2.5
    rebuilt = psg.networks.build_network(net.config())
    rebuilt.load_state_dict(net.state_dict())
    z = torch.randn(3, 6)
    assert torch.allclose(rebuilt(z), net(z))


def test_without_the_constraint_the_norms_move():
    # the check above can fail: a free first layer's column norms change under the same steps
    torch.manual_seed(0)
    net = psg.MLPGenerator(6, (1, 8, 8), hidden=(16,))
    model = psg.SparseGenerator(net, noise_scale=0.1)
    kernel = psg.ShortRunLangevin(model, step_size=0.05, num_steps=5, noise=False)
    abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 0.05}), num_data=32)
    before = _column_norms(net).detach().clone()
    for _ in range(5):
        abp.step(torch.rand(32, 1, 8, 8))
    assert not torch.allclose(_column_norms(net), before, atol=1e-3)


def test_input_norm_is_validated():
    with pytest.raises(ValueError, match="input_norm must be a positive number"):
        psg.MLPGenerator(4, (1, 8, 8), input_norm=0.0)
    config = TrainConfig()
    config.network.input_norm = -1.0
    with pytest.raises(ConfigError, match="network.input_norm"):
        config.validate()


def test_baselines_keep_their_own_free_generator():
    config = TrainConfig()
    assert config.network.input_norm is not None
    assert baselines.dense_config(config).network.input_norm is None
    assert baselines.dense_config(config, 12).network.input_norm is None
    for kind in ("beta_vae", "vsc"):
        assert baselines.recommended(kind, config)[0].network.input_norm is None
    assert config.network.input_norm == 3.0  # the sparse config itself is left unchanged


def test_the_cli_takes_a_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    # v1 collapses on 8 x 8 digits (what the size rule fixes): let it run to the end
    settings = tmp_path / "c.json"
    settings.write_text('{"optim": {"stop_on_collapse": false}}')
    fast = ["--data", "digits", "--epochs", "1", "--latent-dim", "4", "--num-steps", "3",
            "--eval-images", "20", "--batch-size", "200", "--quiet", "--device", "cpu",
            "--config", str(settings)]
    assert main(["train", "--out", str(out), "--recipe", "v1", *fast]) == 0
    config, state = builders.read_run(out)
    assert config.prior.preset == "v1" and config.network.input_norm is None
    assert state.network.get("input_norm") is None
    assert main(["train", "--out", str(out), "--recipe", "v1", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--recipe" in err
    assert main(["train", "--out", str(tmp_path / "r2"), "--image-size", "1", *fast]) == 1
    assert "image_size" in capsys.readouterr().err


def test_the_cli_shapes_the_default_preset(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", "digits", "--epochs", "2",
                 "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
                 "--batch-size", "300", "--quiet", "--device", "cpu",
                 "--dense-fraction", "0.5", "--slab-scale", "1.5"]) == 0
    config, _ = builders.read_run(out)
    assert (config.prior.dense_fraction, config.prior.slab_scale) == (0.5, 1.5)
    schedule = config.build_schedule(6)  # sized to 2 epochs of 6 iterations: half dense
    assert schedule.warmup == 6 and schedule(0).slab_scale == 1.5


def test_annealed_says_when_the_annealing_has_ended():
    schedule = psg.schedules.Schedule(psg.schedules.Curve("linear", 1.0, 0.5, 0, 10), 1.0, 0.1)
    annealed = psg.Annealed(schedule)
    try:
        psg.schedules.set_iteration(9)
        assert not bool(annealed.ended)
        ended = annealed.ended
        psg.schedules.set_iteration(10)
        assert bool(ended)  # the same tensor, moved in place (a derived graph follows it)
        assert math.isclose(float(annealed.params.slab_weight), 0.5)
    finally:
        psg.schedules.set_iteration(0)
