"""ABP, the learner shaped like pyro.infer.SVI: Monte Carlo EM on probabilistic PCA, a plain
function model against the package's, constraints, scaling, learned priors, no host reads,
and any Pyro model through train() and the CLI."""

import math
import os
import shutil
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_sparsegen as psg
from pyro_sparsegen.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from test_training import tiny_config, tiny_data


def test_monte_carlo_em_recovers_probabilistic_pca(float64):
    # x = W z + noise, z ~ N(0, I_2), sigma known: the maximum-likelihood W W^T is
    # U (Lambda - sigma^2) U^T over the top eigenpairs of the sample covariance. With noise on
    # (MALA codes) ABP is Monte Carlo EM; MAP codes would be degenerate here.
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    dim, k, n, sigma = 4, 2, 400, 0.5
    x = torch.randn(n, k) @ torch.randn(dim, k).T + sigma * torch.randn(n, dim)

    def ppca(x):
        w = pyro.param("W", 0.1 * torch.randn(dim, k))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(k), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, sigma).to_event(1), obs=x)

    kernel = psg.ShortRunLangevin(ppca, metropolis=True, step_size=0.3, num_steps=20,
                                  init="prior", adapt_step_size=False)
    for lr, steps in ((0.03, 300), (0.005, 100)):  # a learning-rate drop to end on
        abp = psg.ABP(ppca, kernel, pyro.optim.Adam({"lr": lr}), num_data=n)
        for _ in range(steps):
            abp.step(x)
    w = pyro.param("W").detach()
    evals, evecs = torch.linalg.eigh(x.T @ x / n)
    expected = evecs[:, -k:] @ torch.diag(evals[-k:] - sigma**2) @ evecs[:, -k:].T
    assert (w @ w.T - expected).norm() / expected.norm() < 0.05


def twin_models(latent_dim=5):
    """The package's SparseGenerator and a plain Pyro function with the same density, from
    the same initial weights."""
    schedule = psg.schedules.Schedule(psg.schedules.Curve("linear", 1.0, 0.3, 0, 4), 1.0,
                                      psg.schedules.Curve("exponential", 1.0, 0.1, 0, 4))
    torch.manual_seed(0)
    package = psg.SparseGenerator(psg.MLPGenerator(latent_dim, (1, 8, 8), hidden=(12,)).double(),
                                  schedule=schedule)
    decoder = psg.MLPGenerator(latent_dim, (1, 8, 8), hidden=(12,)).double()
    decoder.load_state_dict(package.network.state_dict())
    annealed = psg.Annealed(schedule, dtype=torch.float64)

    def function(x=None, num_images=None):
        pyro.module("decoder", decoder)
        w, slab, spike = annealed
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", psg.SpikeAndSlab(w, slab, spike).expand([latent_dim])
                            .to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.3).to_event(3), obs=x)

    return package, function, decoder


def test_a_plain_function_takes_the_same_steps_as_the_package_model(float64):
    package, function, decoder = twin_models()
    x = tiny_data().images(limit=16).double()
    learners = []
    for model in (package, function):
        pyro.clear_param_store()
        kernel = psg.ShortRunLangevin(model, noise=False, prior_step="semi-implicit",
                                      num_steps=10, step_size=0.1)
        learners.append(psg.ABP(model, kernel, pyro.optim.Adam({"lr": 0.01, "betas": (0.5, 0.999)}),
                                num_data=48, sparsify=True))
        for _ in range(6):  # across the annealing (the schedule moves every step)
            learners[-1].step(x)
    for name, value in package.network.state_dict().items():
        torch.testing.assert_close(decoder.state_dict()[name], value, rtol=1e-9, atol=1e-11)
    assert learners[0].iteration == learners[1].iteration == 6


def test_a_constrained_param_stays_inside_its_constraint(float64):
    pyro.clear_param_store()
    x = torch.full((20,), 5.0)

    def model(x):
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        rate = pyro.param("rate", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z * rate, scale), obs=x)

    kernel = psg.ShortRunLangevin(model, noise=False, num_steps=5)
    abp = psg.ABP(model, kernel, pyro.optim.SGD({"lr": 5.0}))  # steps far past the bounds
    for _ in range(20):
        abp.step(x)
    assert pyro.param("scale").item() > 0
    assert 0 < pyro.param("rate").item() < 1


def test_the_loss_is_per_datum_and_scaled_as_a_subsampled_plate(float64):
    # loss = -(N / b * sum of the per-image terms + global terms) / N
    pyro.clear_param_store()

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.3))
        pyro.sample("g", dist.Normal(loc, 1.0))  # a global latent: not scaled
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(8)
    kernel = psg.ShortRunLangevin(model, noise=False, num_steps=3)
    abp = psg.ABP(model, kernel, pyro.optim.SGD({"lr": 0.0}), num_data=100)
    pyro.set_rng_seed(0)
    loss = abp.evaluate_loss(x)
    pyro.set_rng_seed(0)
    v = kernel.infer(x)
    local = dist.Normal(0.3, 1.0).log_prob(v["z"]) + dist.Normal(v["z"], 1.0).log_prob(x)
    shared = dist.Normal(0.3, 1.0).log_prob(v["g"])
    assert loss == pytest.approx(-(100 / 8 * local.sum() + shared).item() / 100)


def test_abp_checks_its_arguments():
    model = psg.SparseGenerator(psg.MLPGenerator(3, (1, 4, 4)))
    kernel = psg.ShortRunLangevin(psg.SparseGenerator(psg.MLPGenerator(3, (1, 4, 4))))
    with pytest.raises(ValueError, match="kernel.model must be the model ABP trains"):
        psg.ABP(model, kernel, pyro.optim.Adam({"lr": 1e-3}))
    with pytest.raises(ValueError, match="optim must be a pyro.optim.PyroOptim"):
        psg.ABP(model, psg.ShortRunLangevin(model), torch.optim.Adam)


def test_the_training_step_reads_nothing_from_the_device(monkeypatch):
    # Inside ABP's device step (the training loop's), the package and Pyro never read a
    # tensor back to the host (a synchronisation on a GPU).
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(8,)),
                                schedule=psg.schedules.constant(0.3, 1.0, 0.1))
    kernel = psg.ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=4)
    abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 1e-3}), num_data=32, sparsify=True)
    x = tiny_data().images(limit=16)
    abp.device_step(x)  # builds the target and derives its graph (checked: a read)
    for _ in range(3):
        abp.device_step(x)  # the checked runs after a derivation
    reads = []
    here = os.path.dirname(psg.__file__)
    pyro_dir = os.path.dirname(pyro.__file__)

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(here) or caller.startswith(pyro_dir):
                reads.append((name, caller, sys._getframe(1).f_lineno))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "__bool__", "tolist", "cpu", "numpy", "__float__", "__int__"):
        counting(name)
    for _ in range(8):  # the 8th run is a checked one (its check stays on the device)
        abp.device_step(x)
    monkeypatch.undo()
    assert reads == []


def active_counts(prior_kind, steps=100):
    """``(active coordinates per image in the codes, in prior samples)`` after ``steps`` ABP
    steps on 300 digits, the annealing over from the start (w = 0.5)."""
    pyro.set_rng_seed(0)
    x = psg.load_data("digits", "train").images(limit=300)
    model = psg.SparseGenerator(psg.MLPGenerator(10, (1, 8, 8), hidden=(32,)), noise_scale=0.1,
                                schedule=psg.schedules.constant(0.5, 1.0, 0.1),
                                prior=prior_kind)
    kernel = psg.ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=30,
                                  step_size=0.1)
    abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 0.02, "betas": (0.5, 0.999)}),
                  num_data=300, sparsify=True)
    for _ in range(steps):
        abp.step(x)
    codes = psg.CodeInference(model, kernel, sparsify=True)(x)
    _, samples = model.generate(3000)
    return [(z.abs() > 0.2).float().sum(1).mean().item() for z in (codes, samples)]


def test_a_learned_prior_moves_its_samples_active_count_towards_the_codes():
    # With the schedule's fixed w = 0.5 a prior draw switches on ~4.4 of 10 coordinates
    # whatever the codes use; learned weights (empirical Bayes) follow the codes.
    fixed_codes, fixed_samples = active_counts("annealed")
    codes, samples = active_counts("learned")
    assert abs(samples - codes) < 0.5 * abs(fixed_samples - fixed_codes)
    assert abs(samples - codes) < 0.15 * codes


# -- any model through train() and the CLI ------------------------------------------------------
TINY = ["--data", "digits", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
        "--batch-size", "300", "--quiet", "--device", "cpu"]


@pytest.fixture
def in_user_folder(tmp_path, monkeypatch):
    """The working directory holds the user's model module (it is on the path)."""
    shutil.copy(os.path.join(os.path.dirname(__file__), "user_models.py"),
                tmp_path / "my_models.py")
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("my_models", None)
    return tmp_path


def test_a_function_model_trains_resumes_and_encodes_from_the_cli(in_user_folder, capsys):
    out = str(in_user_folder / "run")
    assert main(["train", "--out", out, "--epochs", "2", "--model", "my_models:sparse_mlp",
                 *TINY]) == 0
    model, config, state = psg.load_run(out, model="my_models:sparse_mlp")
    assert isinstance(model, psg.FunctionModel) and config.model == "my_models:sparse_mlp"
    assert state.progress["epoch"] == 2
    x = psg.load_data("digits", "test").images(limit=5)
    assert model.decode(torch.zeros(5, 4)).shape == (5, 1, 8, 8)
    # stop after one epoch, resume to the end: the same weights
    resumed_out = str(in_user_folder / "resumed")
    sys.modules.pop("my_models", None)
    assert main(["train", "--out", resumed_out, "--epochs", "2", "--model",
                 "my_models:sparse_mlp", *TINY]) == 0
    assert main(["encode", out, "--model", "my_models:sparse_mlp", "--quiet"]) == 0
    codes, _ = psg.load_codes(os.path.join(out, "codes_test.h5"))
    assert codes["z"].shape[1] == 4 and "inclusion_probability" in codes
    # without the opt-in, nothing is imported: one line
    assert main(["encode", out, "--quiet"]) == 1
    assert "records model factory my_models:sparse_mlp" in capsys.readouterr().err
    del x


def test_a_function_model_resumes_bit_exact(in_user_folder):
    config = tiny_config(optim__epochs=2)
    config.model = "my_models:sparse_mlp"
    data = tiny_data()
    kwargs = dict(train_data=data.subset(range(32)), test_data=data.subset(range(32, 48)),
                  progress=False, figures=False)
    straight = psg.train(config, in_user_folder / "a", **kwargs)
    straight_params = {k: v.detach().clone() for k, v in
                       pyro.get_param_store().named_parameters()}
    psg.train(config, in_user_folder / "b", stop_after=1, **kwargs)
    psg.train(config, in_user_folder / "b", resume=True, **kwargs)
    for name, value in straight_params.items():
        assert torch.equal(pyro.param(name).detach(), value), name
    assert straight.metrics[-1]["iteration"] == 4
    # loading builds a new model from the factory, with the saved weights (even with the
    # trained values of the same names already in the param store)
    loaded, _, _ = psg.load_run(in_user_folder / "a", model="my_models:sparse_mlp")
    z = torch.randn(3, config.network.latent_dim)
    torch.testing.assert_close(loaded.decode(z), straight.model.decode(z))


@pytest.mark.parametrize("spec, message", [
    ("no_such_module:f", "module 'no_such_module' does not import"),
    ("my_models:missing", "my_models has no 'missing'"),
    ("my_models:NOT_A_MODEL", "is not a model factory"),
    ("my_models:returns_nothing", "returned NoneType, not a Pyro model"),
    ("not a spec", "--model must be MODULE:NAME"),
])
def test_bad_model_values_are_one_line_exit_2(in_user_folder, capsys, spec, message):
    code = main(["train", "--out", str(in_user_folder / "run"), "--epochs", "1", "--model", spec,
                 *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


class ScaleMixture(dist.TorchDistribution):
    """A user's own scale-mixture prior (not a SpikeAndSlab): ``w N(0, slab) + (1 - w)
    N(0, spike)``, with the posterior slab probability as its ``inclusion_probability``."""

    arg_constraints = {}
    support = dist.constraints.real

    def __init__(self, weight, spike, slab, validate_args=False):
        self.weight, self.spike, self.slab = weight, spike, slab
        super().__init__(torch.Size(), validate_args=validate_args)

    def _parts(self, z):
        return (dist.Normal(0.0, self.slab).log_prob(z) + math.log(self.weight),
                dist.Normal(0.0, self.spike).log_prob(z) + math.log1p(-self.weight))

    def log_prob(self, z):
        return torch.logaddexp(*self._parts(z))

    def sample(self, sample_shape=torch.Size()):
        gate = torch.rand(sample_shape) < self.weight
        return torch.randn(sample_shape) * torch.where(gate, self.slab, self.spike)

    def inclusion_probability(self, z):
        slab, spike = self._parts(z)
        return torch.sigmoid(slab - spike)


class MixtureGenerator(psg.SparseGenerator):
    def prior(self):
        return ScaleMixture(0.3, 0.05, 1.0)


def test_a_users_scale_mixture_prior_sparsifies_by_its_inclusion_probability():
    from pyro_sparsegen.abp import sparsified

    pyro.set_rng_seed(0)
    net = psg.MLPGenerator(4, (1, 4, 4), hidden=(8,))

    def function_model(x=None, *, num_images=None):
        n = x.shape[0] if x is not None else num_images
        decoder = pyro.module("decoder", net)
        with pyro.plate("images", n):
            z = pyro.sample("z", ScaleMixture(0.3, 0.05, 1.0).expand([4]).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.1).to_event(3), obs=x)

    x = torch.rand(20, 1, 4, 4)
    for model in (function_model, MixtureGenerator(net, noise_scale=0.1)):
        kernel = psg.ShortRunLangevin(model, num_steps=5, step_size=0.05)
        latents = kernel.infer(x)
        target = kernel.target((x,), {})
        out = sparsified(model, target, latents, (x,), {})["z"]
        keep = ScaleMixture(0.3, 0.05, 1.0).inclusion_probability(latents["z"]) >= 0.5
        assert torch.equal(out, latents["z"] * keep)
        assert 0 < keep.sum() < keep.numel()
        # the model's hook (SparseGenerator) and the model's trace give the same codes
        assert torch.equal(out, sparsified(None, target, latents, (x,), {})["z"])
