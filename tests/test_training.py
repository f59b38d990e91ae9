import csv
import math
import os
import random
import signal
import weakref

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyro_sparsegen import SparseGenerator, builders, checkpoint, monitor, runtime, training
from pyro_sparsegen.abp import TrainingError
from pyro_sparsegen.builders import load_run, make_kernel
from pyro_sparsegen.checkpoint import CheckpointError
from pyro_sparsegen.config import ConfigError, TrainConfig
from pyro_sparsegen.data import ImageData
from pyro_sparsegen.encoding import CodeInference, infer_codes, make_inference
from pyro_sparsegen.infer import ShortRunLangevin
from pyro_sparsegen.metrics import active_mask
from pyro_sparsegen.monitor import evaluate
from pyro_sparsegen.networks import MLPGenerator
from pyro_sparsegen.schedules import Curve, Schedule
from pyro_sparsegen.training import train


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


def run(config, out, *, interrupt_at=None, **kwargs):
    """Train on the first 32 tiny images, evaluate on the other 16. ``interrupt_at=n``: a
    Ctrl-C (SIGINT) arrives while the n-th batch of this call (from 1) is handed out, so
    training stops after it, checkpointed, mid-epoch or not."""
    data = tiny_data()
    train_data = data.subset(range(32))
    if interrupt_at is not None:
        original, count = train_data.batches, [0]

        def batches_then_sigint(*args, **kw):
            for item in original(*args, **kw):
                count[0] += 1
                if count[0] == interrupt_at:
                    os.kill(os.getpid(), signal.SIGINT)
                yield item

        train_data.batches = batches_then_sigint
    return train(config, out, train_data=train_data, test_data=data.subset(range(32, 48)),
                 progress=False, **kwargs)


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
    # the first batch of epoch 2 (two batches an epoch)
    result = run(tiny_config(), tmp_path / "b", figures=False, interrupt_at=3)
    assert result.interrupted and result.model.iteration == 3
    resumed = run(tiny_config(), tmp_path / "b", resume=True, figures=False)
    assert resumed.model.iteration == 4
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def learned_scale_config():
    """The tiny run with the learned-scale prior handed over after its first step (the
    schedule ends at iteration 1, at slab weight 0.5 and slab scale 1.5)."""
    schedule = Schedule(Curve("linear", 1.0, 0.5, 0, 1), 1.5, 0.1)
    return tiny_config(prior__kind="learned-scale", prior__schedule=schedule.to_dict())


def test_a_learned_prior_resumes_bit_exact_and_loads(tmp_path):
    # the learned-scale prior holds both learned parameters: slab_logit (prior="learned"'s
    # too) and slab_log_scale
    straight = run(learned_scale_config(), tmp_path / "a", figures=False).model
    run(learned_scale_config(), tmp_path / "b", figures=False, stop_after=1)  # handed over
    resumed = run(learned_scale_config(), tmp_path / "b", figures=False, resume=True).model
    start = {"slab_logit": 0.0, "slab_log_scale": math.log(1.5)}  # the hand-over's values
    for name, value in start.items():  # learned since, restored and learned on exactly
        assert (getattr(straight, name) - value).abs().min() > 1e-4, name
    assert straight.handover_iteration == resumed.handover_iteration == 1
    assert same_weights(straight, resumed)
    loaded, _, _ = load_run(tmp_path / "b")
    assert loaded.prior_kind == "learned-scale" and same_weights(straight, loaded)
    torch.testing.assert_close(loaded.prior().slab_scale, straight.prior().slab_scale)


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
    # a class from outside the package: passing it is the opt-in to load it
    resumed = run(tiny_config(), tmp_path, resume=True, model_class=LaplaceSlab)
    assert type(resumed.model) is LaplaceSlab
    model, config, _ = load_run(tmp_path, model_class=LaplaceSlab)
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
    huge = evaluate(model, data, make_inference(model, config), threshold=1e9)
    # every coordinate inactive: the zeroed MSE is that of g(0) for every image
    x = data.images()
    with torch.no_grad():
        expected = ((model.network(torch.zeros(1, 6)) - x) ** 2).mean().item()
    assert huge["inactive_fraction_threshold"] == 1.0
    assert huge["zeroed_mse"] == pytest.approx(expected, rel=1e-5)


# -- resume with every random draw on ----------------------------------------------------------
# Streams training consumes, on the CPU: torch's (Langevin noise, prior starts). The shuffling
# has its own generator per (seed, epoch); the global Python and NumPy streams are not drawn
# from; CUDA's is consumed instead of torch's CPU stream when training on a GPU.
def noisy_config(**overrides):
    """Noise on with the explicit step, chains from prior draws, 4 batches an epoch."""
    return tiny_config(langevin__noise=True, langevin__prior_step="explicit",
                       langevin__init="prior", optim__batch_size=8, **overrides)


def scramble_streams():
    """Move every global stream, as a fresh process would start elsewhere."""
    random.seed(101)
    np.random.seed(101)
    torch.manual_seed(101)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(101)


def stopped_then_resumed(out, stop, config=None):
    """Train (noisy) until ``stop`` ("epoch": after epoch 1; "mid-epoch": after 2 of its 4
    batches), scramble the streams, resume to the end; the resumed model."""
    config = config or noisy_config()
    first = run(config, out, figures=False, **(
        {"stop_after": 1} if stop == "epoch" else {"interrupt_at": 2}))
    assert first.model.iteration == (4 if stop == "epoch" else 2)
    scramble_streams()
    return run(config, out, figures=False, resume=True).model


def same_weights(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def noisy_straight(tmp_path_factory):
    torch.manual_seed(0)
    return run(noisy_config(), tmp_path_factory.mktemp("straight"), figures=False).model


@pytest.mark.parametrize("stop", ["epoch", "mid-epoch"])
def test_noisy_resume_is_bit_exact(noisy_straight, tmp_path, stop):
    resumed = stopped_then_resumed(tmp_path, stop)
    assert resumed.iteration == noisy_straight.iteration == 8
    assert same_weights(noisy_straight, resumed)


@pytest.mark.parametrize("stop", ["epoch", "mid-epoch"])
def test_resume_without_the_torch_stream_is_not_exact(noisy_straight, tmp_path, monkeypatch,
                                                      stop):
    monkeypatch.setitem(runtime.RNG_RESTORERS, "torch", lambda state: None)
    assert not same_weights(noisy_straight, stopped_then_resumed(tmp_path, stop))


@pytest.mark.parametrize("stream", ["python", "numpy"])
def test_streams_training_does_not_draw_from_do_not_matter(noisy_straight, tmp_path,
                                                           monkeypatch, stream):
    monkeypatch.setitem(runtime.RNG_RESTORERS, stream, lambda state: None)
    assert same_weights(noisy_straight, stopped_then_resumed(tmp_path, "mid-epoch"))


def test_training_leaves_the_python_and_numpy_streams_where_seeding_put_them(tmp_path):
    run(noisy_config(), tmp_path, figures=False)
    after = random.getstate(), np.random.get_state()
    random.seed(0)
    np.random.seed(0)
    assert after[0] == random.getstate()
    assert all(np.array_equal(a, b) for a, b in zip(after[1], np.random.get_state()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noisy_resume_on_cuda_needs_the_cuda_stream(tmp_path, monkeypatch):
    config = noisy_config()
    config.device = "cuda"
    straight = run(config, tmp_path / "a", figures=False).model
    assert same_weights(straight, stopped_then_resumed(tmp_path / "b", "mid-epoch", config))
    monkeypatch.setitem(runtime.RNG_RESTORERS, "cuda", lambda state: None)
    assert not same_weights(straight, stopped_then_resumed(tmp_path / "c", "mid-epoch", config))


def test_building_the_kernel_target_leaves_the_rng_alone():
    model = SparseGenerator(MLPGenerator(3, (1, 4, 4), hidden=(5,)))
    kernel = make_kernel(model, tiny_config())
    x = torch.rand(2, 1, 4, 4)
    before = torch.get_rng_state()
    kernel.target((x,), {})  # builds the target: traces the model
    assert torch.equal(before, torch.get_rng_state())


# -- non-finite codes ------------------------------------------------------------------------
def test_a_non_finite_code_stops_training(tmp_path, monkeypatch):
    infer = ShortRunLangevin.infer

    def nan_at_iteration_1(self, *args, **kwargs):
        out = infer(self, *args, **kwargs)
        if self.model.training and self.model.iteration == 1:
            out["z"] = out["z"].clone()
            out["z"][0, 0] = float("nan")
        return out

    monkeypatch.setattr(ShortRunLangevin, "infer", nan_at_iteration_1)
    with pytest.raises(TrainingError, match=r"^a non-finite loss, code or gradient before "
                                            "iteration 2; rolled back") as info:
        run(tiny_config(), tmp_path, figures=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "checkpoint.h5").exists()  # nothing was saved


def test_a_nan_code_is_never_active(float64):
    model = SparseGenerator(MLPGenerator(3, (1, 4, 4), hidden=(5,)))
    z = torch.tensor([[float("nan"), 0.0, 3.0]])
    by_threshold, by_inclusion = active_mask(model, z, threshold=0.2)
    assert by_threshold.tolist() == [[False, False, True]]
    assert by_inclusion[0, 0].item() is False and by_inclusion[0, 2].item() is True
    assert torch.isnan(model.inclusion_probability(z)[0, 0])


# -- limits take class-spread subsets ---------------------------------------------------------
def label_pixels(classes=10, per_class=30):
    """A class-sorted set whose every pixel is its label / 10."""
    labels = np.repeat(np.arange(classes), per_class)
    images = np.broadcast_to((labels / 10.0)[:, None, None], (len(labels), 4, 4))
    return ImageData.from_arrays(images.astype(np.float32), labels)


class PixelCode(torch.nn.Module):
    """An amortised 'model' whose one-number code is the image's mean pixel."""

    latent_dim = 1

    def encode(self, x):
        return x.flatten(1).mean(1, keepdim=True)

    def network(self, z):
        return z[:, :, None, None].expand(-1, 1, 4, 4)

    def decode(self, z):
        return self.network(z)


def test_evaluate_limit_spreads_over_the_classes():
    data, seen = label_pixels(), []

    def encoder(x):
        seen.append(x)
        return PixelCode().encode(x)

    model = SparseGenerator(MLPGenerator(1, (1, 4, 4), hidden=(5,)))
    evaluate(model, data, encoder, limit=20, batch_size=7)
    x = torch.cat(seen)
    assert torch.equal(x, data.spread_subset(20).images())
    labels = (x.flatten(1).mean(1) * 10).round().long()
    assert np.bincount(labels.numpy()).tolist() == [2] * 10


def test_encode_dataset_limit_spreads_and_labels_follow_the_rows():
    data, model = label_pixels(), PixelCode()
    codes = infer_codes(model, data, CodeInference(model, None), limit=15, batch_size=4)
    assert set(codes["labels"].tolist()) == set(range(10))  # not the first classes only
    np.testing.assert_allclose(codes["z"][:, 0], codes["labels"] / 10.0, rtol=1e-6)


def test_infer_codes_keeps_no_batch_past_the_next():
    # the codes go into arrays of all N rows as they come: keeping every batch's tensors for
    # one concatenation at the end grew an encode by about 7 KB an image for 0.9 KB of codes
    # (benchmarks/load.py)
    data, model, returned, alive = label_pixels(), PixelCode(), [], []

    def encoder(x):
        alive.append(sum(ref() is not None for ref in returned))
        z = model.encode(x)
        returned.append(weakref.ref(z))
        return z

    codes = infer_codes(model, data, encoder, batch_size=7)
    assert len(returned) == 43 and max(alive) <= 2
    assert codes["z"].shape == (300, 1) and codes["mse"].shape == (300,)
    np.testing.assert_allclose(codes["z"][:, 0], codes["labels"] / 10.0, rtol=1e-6)


# -- collapse after the annealing --------------------------------------------------------------
@pytest.mark.parametrize("how", ["inactive", "zeroed"])
def test_a_collapse_after_the_annealing_stops_and_keeps_the_best_checkpoint(tmp_path,
                                                                           monkeypatch, how):
    # the default schedule with 10 % of the run dense ends its annealing at 60 % of the run:
    # iteration 7 of 12 (epoch 4); from epoch 5 on the held-out codes collapse
    original = monitor.evaluate

    def collapsing(model, *args, **kwargs):
        figures = original(model, *args, **kwargs)
        if model.iteration >= 10:  # epochs 5 and 6
            if how == "inactive":
                figures["inactive_fraction_threshold"] = 0.995
            else:
                figures["zeroed_mse"] *= 10
        return figures

    monkeypatch.setattr(monitor, "evaluate", collapsing)
    config = tiny_config(optim__epochs=6, prior__dense_fraction=0.1)
    assert config.build_schedule(2).end == 7
    with pytest.raises(TrainingError, match=r"^collapse after the annealing at epoch 5: .*"
                                            r"the best checkpoint is best.h5 \(epoch 4") as info:
        run(config, tmp_path, figures=False)
    assert "\n" not in str(info.value)
    last = checkpoint.load(tmp_path / "checkpoint.h5")
    best = checkpoint.load(tmp_path / "best.h5")
    assert last.progress["epoch"] == best.progress["epoch"] == 4  # no checkpoint of epoch 5
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 5  # the collapsed epoch's row is there


def test_a_run_collapsed_from_the_annealing_on_is_warned_about_and_goes_on(tmp_path,
                                                                          monkeypatch):
    original = monitor.evaluate

    def collapsed(model, *args, **kwargs):
        figures = original(model, *args, **kwargs)
        # every epoch after the annealing (epoch 4 on, with 10 % of the run dense)
        if model.iteration >= 8:
            figures["inactive_fraction_threshold"] = 1.0
        return figures

    monkeypatch.setattr(monitor, "evaluate", collapsed)
    with pytest.warns(monitor.CollapseWarning, match=r"^epoch 4, after the annealing: 100.0% "
                                                      r"of the held-out codes inactive; no "
                                                      r"earlier healthy epoch"):
        run(tiny_config(optim__epochs=6, prior__dense_fraction=0.1), tmp_path, figures=False)
    assert checkpoint.load(tmp_path / "checkpoint.h5").progress["epoch"] == 6
    assert not (tmp_path / "best.h5").exists()


# -- langevin.compile = "auto" ---------------------------------------------------------------
def test_auto_compiles_the_training_kernel_of_long_runs_only(tmp_path, monkeypatch):
    from pyro_sparsegen.config import AUTO_COMPILE_ITERATIONS

    config = tiny_config()
    assert config.langevin.compile == "auto"  # the default
    assert config.langevin.compiled(AUTO_COMPILE_ITERATIONS)
    assert not config.langevin.compiled(AUTO_COMPILE_ITERATIONS - 1)
    assert not config.langevin.compiled(None)  # an encoder: not a training run
    model = builders.build_model(config, (1, 8, 8), 2)
    assert not make_inference(model, config).kernel.compile
    for fixed in (True, False):
        config.langevin.compile = fixed
        assert builders.make_kernel(model, config).compile is fixed
    with pytest.raises(ConfigError, match=r'langevin.compile must be true, false or "auto"'):
        TrainConfig.from_dict({"langevin": {"compile": "yes"}})
    # train() asks for the steps the run has left: 2 batches x 3 epochs, then 1 after a resume
    seen, original = [], builders.make_kernel

    def spy(model, config, iterations=None):
        seen.append(iterations)
        return original(model, config, iterations)

    monkeypatch.setattr(builders, "make_kernel", spy)
    run(tiny_config(optim__epochs=3), tmp_path, interrupt_at=5, figures=False)
    run(tiny_config(optim__epochs=3), tmp_path, resume=True, figures=False)
    assert seen == [6, 1]


def test_the_previous_layouts_names_are_aliases_of_the_new_ones():
    import pyro_sparsegen as psg
    from pyro_sparsegen import ABP, ShortRunLangevin, encoding

    model = SparseGenerator(MLPGenerator(3, (1, 4, 4)))
    abp = ABP(model, ShortRunLangevin(model), pyro.optim.Adam({"lr": 1e-3}))
    with pytest.warns(DeprecationWarning, match="ABP.set_iteration"):
        abp.move_to(3)
    assert abp.iteration == model.iteration == 3
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.builders.build_model"):
        assert training.build_model is builders.build_model
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.runtime.restore_rng"):
        assert checkpoint.restore_rng is runtime.restore_rng
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.encoding.CodeInference"):
        assert psg.Encoder is encoding.Encoder is training.Encoder is CodeInference
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.encoding.make_inference"):
        assert psg.make_encoder is training.make_encoder is make_inference
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.encoding.infer_codes"):
        assert psg.encode_dataset is encoding.encode_dataset is infer_codes
    with pytest.warns(DeprecationWarning, match="pyro_sparsegen.builders.load_run"):
        assert training.load_run is load_run
