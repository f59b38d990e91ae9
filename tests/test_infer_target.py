"""A Pyro model as the core's density (pyro_sparsegen.infer.target) and the graph derived from
it (pyro_sparsegen.infer.transition): transforms, Jacobians, plates, blocks, the checks."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

import pyro_sparsegen as psg
from pyro_sparsegen.infer import DerivationWarning, ShortRunLangevin
from pyro_sparsegen.infer.target import ModelTarget


def constrained_model(y):
    a = pyro.sample("a", dist.Beta(2.0, 3.0))
    b = pyro.sample("b", dist.Gamma(2.0, 1.0))
    c = pyro.sample("c", dist.HalfNormal(2.0))
    u = pyro.sample("u", dist.Uniform(-1.0, 3.0))
    p = pyro.sample("p", dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    chol = pyro.sample("chol", dist.LKJCholesky(3, 2.0))
    corr = pyro.sample("corr", dist.LKJ(3, 1.5))
    ordered = pyro.sample("ordered", dist.TransformedDistribution(
        dist.Normal(torch.zeros(3), 2.0).to_event(1), [dist.transforms.OrderedTransform()]))
    v = pyro.sample("v", dist.Normal(torch.zeros(2), 1.0))  # a batch dim without a plate
    m = pyro.sample("m", PositiveVector())
    loc = a + b + c + u + p[0] + chol[1, 0] + corr[0, 1] + v.sum() + m[1]
    pyro.sample("o", dist.Normal(ordered, 1.0).to_event(1), obs=torch.tensor([-1.0, 0.0, 2.0]))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y)


class PositiveVector(dist.TorchDistribution):
    """An event of 2 with an elementwise support: its Jacobian has an event dim to sum."""

    support = dist.constraints.positive
    arg_constraints = {}

    def __init__(self):
        super().__init__(torch.Size(), torch.Size([2]))

    def sample(self, sample_shape=torch.Size()):
        return torch.ones(torch.Size(sample_shape) + (2,))

    def log_prob(self, value):
        return -(value * torch.tensor([1.0, 3.0])).sum(-1)


def test_density_is_pyros_potential_with_every_jacobian(float64):
    # Every continuous support Pyro's HMC takes: the log density and its gradient equal minus
    # Pyro's own potential energy (initialize_model), Jacobians included.
    y = torch.randn(4)
    params, potential, transforms, _ = initialize_model(constrained_model, (y,))
    target = ModelTarget(constrained_model, (y,), {})
    free = {k: v.detach().requires_grad_() for k, v in params.items()}
    position, glob = target.pack_free(free)
    d = target.density(position, glob)
    energy = potential(free)
    assert (d.local.sum() + d.shared.sum()).item() == pytest.approx(-energy.item(), rel=1e-10)
    grads = torch.autograd.grad(energy, [free[k] for k in target.names])
    mine = target.unpack_free(d.grad, d.grad_global)
    for name, g in zip(target.names, grads):
        assert torch.allclose(mine[name], -g, atol=1e-10), name
    assert set(target.transforms) == set(transforms)


def test_a_discrete_latent_is_refused_in_one_line():
    def model():
        k = pyro.sample("k", dist.Categorical(torch.ones(3)))
        pyro.sample("x", dist.Normal(k.float(), 1.0), obs=torch.tensor(0.5))

    with pytest.raises(ValueError, match=r"latent site 'k' is discrete .*continuous latents"
                                         r".*marginalise") as info:
        ShortRunLangevin(model).infer()
    assert "\n" not in str(info.value)


def test_a_support_depending_on_another_latent_is_refused():
    def model():
        a = pyro.sample("a", dist.Gamma(2.0, 1.0))
        pyro.sample("b", dist.Uniform(0.0, a))

    with pytest.raises(ValueError, match="'b' has a support that depends on another latent"):
        ShortRunLangevin(model).infer()


def hierarchical(x):
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    with pyro.plate("images", x.shape[0]):
        z = pyro.sample("z", psg.SpikeAndSlab(w, 1.0, 0.1).expand([3]).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 0.5).to_event(1), obs=x)


def test_chain_plate_and_global_block(float64):
    x = torch.randn(5, 1)
    target = ModelTarget(hierarchical, (x,), {})
    assert (target.plate, target.num_chains, target.local_size, target.global_size) == \
        ("images", 5, 3, 1)
    assert target.mixture_index.tolist() == [0, 1, 2]  # z's coordinates, not w's
    # a site outside a plate that depends on its latents: the plate cannot hold chains
    def coupled(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("s", dist.Normal(z.sum(), 1.0), obs=torch.tensor(0.0))

    assert ModelTarget(coupled, (x,), {}).plate is None
    with pytest.raises(ValueError, match="sites outside it depend on its latents: s"):
        ModelTarget(coupled, (x,), {}, chain_plate="images")
    with pytest.raises(ValueError, match="chain_plate 'pixels' holds no latent site"):
        ModelTarget(hierarchical, (x,), {}, chain_plate="pixels")


def test_nested_plates_choose_the_outer_one(float64):
    def model(x):
        with pyro.plate("images", 4, dim=-2):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            with pyro.plate("parts", 3, dim=-1):
                b = pyro.sample("b", dist.Normal(a, 1.0))
                pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    x = torch.randn(4, 3)
    target = ModelTarget(model, (x,), {})
    assert (target.plate, target.num_chains, target.local_size) == ("images", 4, 4)
    inner = ModelTarget(model, (x,), {}, chain_plate="parts")  # a valid choice too
    assert (inner.num_chains, inner.local_size, inner.global_size) == (3, 4, 4)
    z = ShortRunLangevin(model, noise=False, num_steps=5).infer(x)
    assert z["a"].shape == (4, 1) and z["b"].shape == (4, 3)

    def same_latents(x):  # both plates hold the same latents: the one with more chains
        with pyro.plate("images", 4, dim=-2), pyro.plate("parts", 3, dim=-1):
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    assert ModelTarget(same_latents, (x,), {}).plate == "images"


def test_building_a_target_leaves_the_global_rng_alone():
    x = torch.randn(5, 1)
    before = torch.random.get_rng_state()
    ModelTarget(hierarchical, (x,), {})  # traces the model, drawing w and z from the prior
    assert torch.equal(torch.random.get_rng_state(), before)


def test_derived_graph_follows_the_schedule(float64):
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 4, 4), hidden=(8,)).double(),
                                schedule=psg.schedules.Schedule(
                                    psg.schedules.Curve("linear", 1.0, 0.1, 0, 10), 1.0,
                                    psg.schedules.Curve("linear", 1.0, 0.05, 0, 10)))
    x = torch.rand(6, 1, 4, 4)
    fast = ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=5)
    slow = ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=5,
                            derive=False)
    codes = []
    for iteration in (0, 3, 7, 12):  # the graph reads the prior's live buffer
        model.iteration = iteration
        assert model.prior().slab_weight.item() == pytest.approx(
            model.prior_params().slab_weight)
        codes.append(fast.infer(x)["z"])
        assert torch.allclose(codes[-1], slow.infer(x)["z"], atol=1e-12)
    assert not torch.allclose(codes[0], codes[-1])
    dynamics = next(iter(fast._transitions.values()))
    assert dynamics.using_graph and dynamics.mismatches == 0  # never stale, never redone


def test_what_the_step_computes_from_parameters_alone_follows_every_update(float64):
    # the column-normalised weight and the prior's constants are hoisted out of the step
    # (computed once per run): they must follow in-place parameter updates between runs
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 4, 4), hidden=(8,),
                                                 input_norm=3.0).double(),
                                schedule=psg.schedules.constant(0.5, 1.0, 0.1))
    x = torch.rand(6, 1, 4, 4)
    fast = ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=5)
    slow = ShortRunLangevin(model, noise=False, prior_step="semi-implicit", num_steps=5,
                            derive=False)
    torch.manual_seed(0)
    for _ in range(4):
        assert torch.allclose(fast.infer(x)["z"], slow.infer(x)["z"], atol=1e-12)
        with torch.no_grad():  # an optimiser step, in place
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    graph = next(iter(fast._transitions.values())).graph_step
    hoisted = [name for name, _ in graph.named_buffers() if name.startswith("_hoisted")]
    assert hoisted and next(iter(fast._transitions.values())).mismatches == 0


SCALE = [1.0]


def reads_a_python_global(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, SCALE[0]))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_a_graph_gone_stale_is_caught_and_the_run_redone(float64):
    x = torch.randn(3)
    fast = ShortRunLangevin(reads_a_python_global, noise=False, num_steps=3)
    slow = ShortRunLangevin(reads_a_python_global, noise=False, num_steps=3, derive=False)
    SCALE[0] = 1.0
    fast.infer(x)
    SCALE[0] = 0.2  # a graph cannot see this: the next (checked) run must notice
    assert torch.allclose(fast.infer(x)["z"], slow.infer(x)["z"])
    SCALE[0] = 0.5
    with pytest.warns(DerivationWarning, match="went stale twice"):
        z = fast.infer(x)["z"]
    assert torch.allclose(z, slow.infer(x)["z"])
    SCALE[0] = 1.0


def test_a_model_a_graph_cannot_follow_runs_through_pyro_with_one_warning(float64):
    def branches(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            scale = 1.0 if float(z.detach().sum()) > 0 else 2.0  # control flow on a value
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    calls = [0]

    def counts_its_calls(x):
        calls[0] += 1
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0 + calls[0] % 2))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(3)
    for model, why in ((branches, "could not be traced"),
                       (counts_its_calls, "disagrees with the model's own trace")):
        kernel = ShortRunLangevin(model, noise=False, num_steps=3)
        with pytest.warns(DerivationWarning, match=why):
            kernel.infer(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            kernel.infer(x)  # once only
        assert not next(iter(kernel._transitions.values())).using_graph


def test_a_normal_likelihood_with_one_scale_takes_the_closed_form_and_equals_pyros(float64):
    from pyro_sparsegen.infer.sites import normal_log_prob as _normal_log_prob

    loc = torch.randn(4, 1, 3, 3, requires_grad=True)
    value = torch.rand(4, 1, 3, 3)
    for fn in (dist.Normal(loc, 0.3).to_event(3), dist.Normal(loc, torch.tensor(0.3)).to_event(2),
               dist.Normal(loc, 0.3)):
        fast = _normal_log_prob(fn, value)
        assert fast is not None
        expected = fn.log_prob(value)
        torch.testing.assert_close(fast, expected)
        torch.testing.assert_close(torch.autograd.grad(fast.sum(), loc)[0],
                                   torch.autograd.grad(expected.sum(), loc)[0])
    # a scale per element, or one that is learned: Pyro's own log_prob
    assert _normal_log_prob(dist.Normal(loc, torch.rand(4, 1, 3, 3) + 0.1), value) is None
    assert _normal_log_prob(dist.Normal(loc, torch.tensor(0.3, requires_grad=True)), value) \
        is None
