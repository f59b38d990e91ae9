import csv
import os

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyro_sparsegen import SparseGenerator
from pyro_sparsegen.checkpoint import CheckpointError
from pyro_sparsegen.config import ConfigError, TrainConfig
from pyro_sparsegen.data import ImageData
from pyro_sparsegen.training import (TrainingError, evaluate, load_run, make_encoder, make_kernel,
                                     train)


def tiny_data(n=48, seed=0):
    g = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    base = g.random((3, 8, 8)) > 0.6
    images = np.clip(base[labels] * 0.8 + 0.2 * g.random((n, 8, 8)), 0, 1).astype(np.float32)
    return ImageData.from_arrays(images, labels, name="tiny")


def tiny_config(**overrides):
    config = TrainConfig.from_dict({
        "data": {"spec": "tiny"},
        "network": {"latent_dim": 6, "hidden": [16]},
        "langevin": {"num_steps": 5, "step_size": 0.1},
        "optim": {"batch_size": 16, "epochs": 2, "lr": 0.01},
        "device": "cpu",
    })
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    return config.validate()


def run(config, out, **kwargs):
    data = tiny_data()
    return train(config, out, train_data=data.subset(range(32)), test_data=data.subset(
        range(32, 48)), progress=False, **kwargs)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_run(tmp_path):
    result = run(tiny_config(), tmp_path)
    assert not result.interrupted
    assert len(result.metrics) == 2 and result.model.iteration == 4
    for name in ("checkpoint.h5", "metrics.csv", "training_curves.png", "reconstructions.png",
                 "samples.png", "code_usage.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("test_mse", "zeroed_mse", "inactive_fraction_threshold",
                "inactive_fraction_inclusion", "log_joint", "slab_weight", "spike_scale"):
        assert np.isfinite(float(rows[-1][key])), key


def test_resume_is_bit_exact(tmp_path):
    straight = run(tiny_config(), tmp_path / "a").model
    run(tiny_config(), tmp_path / "b", stop_after=1)
    resumed = run(tiny_config(), tmp_path / "b", resume=True)
    assert len(resumed.metrics) == 2
    for key, value in weights(straight).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_same_seed_same_metrics(tmp_path):
    a = run(tiny_config(), tmp_path / "a", figures=False).metrics
    b = run(tiny_config(), tmp_path / "b", figures=False).metrics
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b]


def test_load_run_rebuilds_model(tmp_path):
    result = run(tiny_config(), tmp_path, figures=False)
    model, config, state = load_run(tmp_path)
    assert config.to_dict() == tiny_config().to_dict()
    assert model.iteration == result.model.iteration
    assert model.prior_params() == result.model.prior_params()
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_resume_rejects_mismatched_config(tmp_path):
    run(tiny_config(optim__epochs=1), tmp_path, figures=False)
    with pytest.raises(ConfigError, match="latent size"):
        run(tiny_config(network__latent_dim=7), tmp_path, resume=True)
    with pytest.raises(ConfigError, match="conv"):
        run(tiny_config(network__type="conv"), tmp_path, resume=True)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run(tiny_config(), tmp_path, resume=True)


def test_divergence_stops_without_writing_nan(tmp_path):
    run(tiny_config(optim__epochs=1), tmp_path, figures=False)
    before = load_run(tmp_path)[0].state_dict()
    config = tiny_config(langevin__step_size=1e4, langevin__prior_step="explicit")
    with pytest.raises(TrainingError, match="diverged|non-finite"):
        run(config, tmp_path, resume=True)
    after = load_run(tmp_path)[0].state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key])


def test_interrupt_saves_mid_epoch_and_resumes_exactly(tmp_path):
    straight = run(tiny_config(), tmp_path / "a", figures=False).model

    data = tiny_data()
    train_data = data.subset(range(32))
    calls = {"n": 0}
    original = train_data.batches

    def batches_then_sigint(*args, **kwargs):
        for i, item in enumerate(original(*args, **kwargs)):
            calls["n"] += 1
            if calls["n"] == 3:  # the first batch of epoch 2 (two batches an epoch)
                os.kill(os.getpid(), __import__("signal").SIGINT)
            yield item

    train_data.batches = batches_then_sigint
    result = train(tiny_config(), tmp_path / "b", train_data=train_data,
                   test_data=data.subset(range(32, 48)), progress=False, figures=False)
    assert result.interrupted and result.model.iteration == 3
    resumed = run(tiny_config(), tmp_path / "b", resume=True, figures=False)
    assert resumed.model.iteration == 4
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


class LaplaceSlab(SparseGenerator):
    """A variant prior: a Laplace 'slab' with a learned scale."""

    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self.laplace_scale = PyroParam(torch.tensor(0.5), constraint=constraints.positive)

    def prior(self):
        return dist.Laplace(torch.zeros(()), self.laplace_scale)


def test_variant_prior_trains_resumes_encodes_samples(tmp_path):
    first = run(tiny_config(), tmp_path, model_class=LaplaceSlab, stop_after=1)
    assert type(first.model) is LaplaceSlab
    resumed = run(tiny_config(), tmp_path, resume=True)
    assert type(resumed.model) is LaplaceSlab
    model, config, _ = load_run(tmp_path)
    assert isinstance(model, LaplaceSlab)
    assert torch.allclose(model.laplace_scale, resumed.model.laplace_scale)
    assert not torch.allclose(model.laplace_scale, torch.tensor(0.5))  # it was learned
    x = tiny_data().images(limit=4)
    z = make_kernel(model, config).infer(x)["z"]
    assert z.shape == (4, 6) and torch.isfinite(z).all()
    images, _ = model.generate(3)
    assert images.shape == (3, 1, 8, 8)


def test_evaluate_zeroed_mse_uses_exact_zeros(tmp_path):
    model = run(tiny_config(optim__epochs=1), tmp_path, figures=False).model
    data = tiny_data().subset(range(32, 48))
    config = tiny_config()
    huge = evaluate(model, data, make_encoder(model, config), threshold=1e9)
    # every coordinate inactive: the zeroed MSE is that of g(0) for every image
    x = data.images()
    with torch.no_grad():
        expected = ((model.network(torch.zeros(1, 6)) - x) ** 2).mean().item()
    assert huge["inactive_fraction_threshold"] == 1.0
    assert huge["zeroed_mse"] == pytest.approx(expected, rel=1e-5)
