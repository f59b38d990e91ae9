"""Cost of a ShortRunLangevin step against hand-written PyTorch Langevin loops, Pyro's HMC, a
plain Pyro function model and the compiled step; and the distance to the hardware.

Times, in one process, paired and repeated (all variants once per repeat, in a rotating order;
medians of the paired ratios are reported), for the authors' MNIST MLP (``MLPGenerator(100)``,
batch 100) and a conv generator (d = 64, 28x28, batch 64), both with the default first layer
(fixed column norms, ``TrainConfig().network.input_norm``: every loop calls the same module),
K = 30 steps of delta = 0.05, the generator in its training state (parameters requiring grad):

- ``a``: a hand-written loop, explicit step with the noise on; ``b``: the kernel doing that;
- ``a'``: a hand-written loop, the training default (the semi-implicit step
  ``z' = z + P h grad``, ``P = 1 / (1 + h kappa)``, kappa the spike-and-slab's curvature in
  closed form, noise off); ``b'``: the kernel doing that (``TrainConfig().langevin``);
- ``g``: the training default on a plain Pyro function equivalent to ``SparseGenerator``
  (``pyro.module``, ``dist.Normal(...).to_event(3)``, a ``SpikeAndSlab`` site): against ``b'``;
- ``k``: the kernel with ``compile=True`` (the training default): against ``a'`` (MLP only by
  default; its cold compile time is printed);
- ``c``: Pyro's ``HMC(num_steps=1)``, one gradient per transition: against ``a``.

Both hand loops do the arithmetic the kernel does: K gradient evaluations and a last log
density at the final state (the kernel's divergence check of its last step), under
``parametrize.cached()`` (the normalised first-layer weight computed once per run, as the
kernel's derived graph does). Every case also
prints its achieved GFLOP/s (the matmul FLOPs of one step's forward and backward, counted by
``torch.utils.flop_counter``) and that as a fraction of this machine's fp32 matmul throughput
(a 1024^3 GEMM timed in the same run).

Replica exchange (issue 20, item 7): ``t`` a tempered transition (``tempering=L``,
``K`` ladders per image, the hottest level refreshed from the prior, the swap step) against
``u`` an untempered one over the same ``L * K`` chain rows per image (same MALA, crossing and
pair moves), timed side by side per transition (``sample_chains`` with no warm-up, so that
neither adapts), on the explaining-away model of issue 20 (``tests/explaining_away.py``) and
on the default-sized MLP generator (8 images, 12 x 4); ``--analyze-scale`` adds the MLP at
``analyze``'s ladder (16 images, 12 x 8: 1,536 rows, where the arithmetic sets the time);
``--tempered-only`` runs just that. The runs are 400 transitions (``--transitions``): under
``infer.chains.SHORT_RUN`` (200) a run goes through Pyro instead of the derived graph.

Pyro's NUTS on the explaining-away model is the anchor (``--nuts``, not in the default run):
``--nuts-chains`` chains one after the other, each ``--nuts-warmup`` + ``--nuts-draws``, within
``--nuts-budget`` seconds; it prints how far it got, its seconds and, for the chains that
finished, the max error of the inclusion probabilities and of ``P(|z| <= 0.2)`` against the
enumerated answer and the max split R-hat.

Run: ``python benchmarks/kernel_step.py`` (``--threads``, ``--repeats``, ``--budget``,
``--device``, ``--no-compile``, ``--compile-conv``, ``--tempered-only``, ``--analyze-scale``,
``--transitions``, ``--nuts``). The
closing lines: ``kernel_default_vs_handwritten_max_ratio`` (the larger b'/a'),
``kernel_vs_handwritten_max_ratio`` (the larger b/a), ``compiled_vs_handwritten_ratio`` (MLP
k/a'), ``generic_vs_package_ratio`` (the larger g/b'), ``tempered_vs_untempered_max_ratio``
(the larger t/u; target <= 1.05).
"""

import argparse
import math
import os
import statistics
import sys
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc import HMC
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

import pyro_sparsegen as psg
from pyro_sparsegen import ConvGenerator, MLPGenerator, ShortRunLangevin, SparseGenerator
from pyro_sparsegen import schedules
from pyro_sparsegen.config import TrainConfig

STEP_SIZE = 0.05
NUM_STEPS = 30
NOISE_SCALE = 0.3
SLAB_WEIGHT, SLAB_SCALE, SPIKE_SCALE = 0.5, 1.0, 0.04
DEVICE = torch.device("cpu")


# -- the hand-written loops ------------------------------------------------------------------
def hand_langevin(network, x, latent_dim, *, semi_implicit=False, noise=True):
    """K Langevin steps on log N(x; g(z), sigma^2) + log spike-and-slab(z) from zeros, then the
    log density at the final state."""
    w = torch.tensor(SLAB_WEIGHT, dtype=x.dtype, device=x.device)
    s1 = torch.tensor(SLAB_SCALE, dtype=x.dtype, device=x.device)
    s0 = torch.tensor(SPIKE_SCALE, dtype=x.dtype, device=x.device)
    a1 = w.log() - s1.log() - 0.5 * math.log(2 * math.pi)
    a0 = torch.log1p(-w) - s0.log() - 0.5 * math.log(2 * math.pi)
    c1, c0 = 1 / s1**2, 1 / s0**2
    norm = x[0].numel() * (math.log(NOISE_SCALE) + 0.5 * math.log(2 * math.pi))
    h = 0.5 * STEP_SIZE**2

    def log_density(z):
        sq = z * z
        slab, spike = a1 - 0.5 * c1 * sq, a0 - 0.5 * c0 * sq
        log_prior = torch.logaddexp(slab, spike).sum(-1)
        log_lik = ((x - network(z)) / NOISE_SCALE).pow(2).flatten(1).sum(1) * -0.5 - norm
        return log_prior + log_lik, slab, spike

    z = torch.zeros(x.shape[0], latent_dim, dtype=x.dtype, device=x.device)
    with parametrize.cached():  # the normalised first-layer weight once per run
        for _ in range(NUM_STEPS):
            z = z.detach().requires_grad_(True)
            value, slab, spike = log_density(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
            with torch.no_grad():
                step = h * grad
                if noise:
                    step = step + STEP_SIZE * torch.randn_like(z)
                if semi_implicit:
                    r = torch.sigmoid(slab - spike)
                    step = step / (1 + h * (c0 + r * (c1 - c0)))
                z = z + step
        with torch.no_grad():
            return z, log_density(z)[0]


# -- the package, a plain Pyro function, Pyro's HMC -------------------------------------------
def make_model(network):
    schedule = schedules.constant(SLAB_WEIGHT, SLAB_SCALE, SPIKE_SCALE)
    return SparseGenerator(network, schedule=schedule, noise_scale=NOISE_SCALE)


def plain_function(network):
    """The same model as a Pyro function a user would write."""
    d = network.latent_dim
    annealed = psg.Annealed(schedules.constant(SLAB_WEIGHT, SLAB_SCALE, SPIKE_SCALE),
                            device=DEVICE)

    def model(x=None, num_images=None):
        pyro.module("generator", network)
        w, slab, spike = annealed
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", psg.SpikeAndSlab(w, slab, spike).expand([d]).to_event(1))
            pyro.sample("x", dist.Normal(network(z), NOISE_SCALE).to_event(3), obs=x)

    return model


def make_hmc(model, x):
    hmc = HMC(model, step_size=STEP_SIZE, num_steps=1, adapt_step_size=False,
              adapt_mass_matrix=False, full_mass=False)
    with pyro.validation_enabled(False):
        hmc.setup(0, x)
    return hmc


def hmc_steps(hmc, num_steps):
    params = hmc.initial_params
    with pyro.validation_enabled(False):
        for _ in range(num_steps):
            params = hmc.sample(params)
    return params


# -- timing ------------------------------------------------------------------------------------
def sync():
    if DEVICE.type == "cuda":  # queued kernels count
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def gemm_gflops(size=1024, repeats=10):
    a = torch.randn(size, size, device=DEVICE)
    b = torch.randn(size, size, device=DEVICE)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def step_flops(network, x, latent_dim):
    """Matmul FLOPs of one Langevin step's forward and backward (of the hand loop)."""
    z = torch.zeros(x.shape[0], latent_dim, device=x.device, requires_grad=True)
    params = [p for p in network.parameters() if p.requires_grad]
    for p in params:  # the step differentiates w.r.t. z only
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter:
            (-0.5 * ((x - network(z)) / NOISE_SCALE).pow(2).sum()).backward()
    finally:
        for p in params:
            p.requires_grad_(True)
    return counter.get_total_flops()


def run_case(name, network, image_shape, batch, args, compiled):
    torch.manual_seed(0)
    network = network.to(DEVICE)
    x = torch.rand(batch, *image_shape, device=DEVICE)
    d = network.latent_dim
    model = make_model(network)
    default = TrainConfig().langevin.kernel_options()
    default.update(step_size=STEP_SIZE, num_steps=NUM_STEPS, compile=False)
    explicit = ShortRunLangevin(model, step_size=STEP_SIZE, num_steps=NUM_STEPS, noise=True)
    semi = ShortRunLangevin(model, **default)
    generic = ShortRunLangevin(plain_function(network), **default)
    hmc = make_hmc(model, x)
    variants = {
        "a  hand explicit, noise": lambda: hand_langevin(network, x, d),
        "b  kernel explicit, noise": lambda: explicit.infer(x),
        "a' hand default (semi-implicit, MAP)": lambda: hand_langevin(
            network, x, d, semi_implicit=True, noise=False),
        "b' kernel default": lambda: semi.infer(x),
        "g  plain Pyro function, default": lambda: generic.infer(x),
        "c  pyro HMC(num_steps=1)": lambda: hmc_steps(hmc, NUM_STEPS),
    }
    if compiled:
        fast = ShortRunLangevin(model, **{**default, "compile": True})
        cold = sum(timed(lambda: fast.infer(x)) for _ in range(4))  # compiled on the 4th run
        dynamics = fast.transitions[0]
        print(f"\n{name}: compile=True first 4 calls {cold:.1f} s (compile "
              f"{dynamics.compile_seconds or float('nan'):.1f} s); "
              + ("compiled" if dynamics.compile_seconds else f"not compiled: {dynamics.failed}"))
        variants["k  kernel default, compile=True"] = lambda: fast.infer(x)
    for fn in variants.values():  # warm-up: derived graphs, allocator, first-call caches
        fn()
        fn()
    times = {k: [] for k in variants}
    names = list(variants)
    start = time.perf_counter()
    for r in range(args.repeats):
        # rotate the order so no variant always runs first (or after the same neighbour)
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(variants[k]) / NUM_STEPS)
        if r >= 4 and time.perf_counter() - start > args.budget:
            break
    done = len(times[names[0]])
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = step_flops(network, x, d)
    print(f"\n== {name}: batch {batch}, latent {d}, image {tuple(image_shape)}, "
          f"K={NUM_STEPS}, delta={STEP_SIZE}, {done} repeats; {flops / 1e6:.1f} MFLOP a step ==")
    for k, v in med.items():
        q = statistics.quantiles(times[k], n=4)
        gflops = flops / v / 1e9 if not k.startswith("c") else float("nan")
        print(f"  {k:38s} median {v * 1e3:7.3f} ms/step (IQR {q[0] * 1e3:.3f}-{q[2] * 1e3:.3f})"
              f"  {gflops:6.2f} GFLOP/s = {gflops / args.peak:5.1%} of the GEMM peak")
    pairs = {  # key: (label, numerator, denominator)
        "explicit": ("b/a", "b  kernel explicit, noise", "a  hand explicit, noise"),
        "default": ("b'/a'", "b' kernel default", "a' hand default (semi-implicit, MAP)"),
        "generic": ("g/b'", "g  plain Pyro function, default", "b' kernel default"),
        "hmc": ("c/a", "c  pyro HMC(num_steps=1)", "a  hand explicit, noise"),
    }
    if compiled:
        pairs["compiled"] = ("k/a'", "k  kernel default, compile=True",
                             "a' hand default (semi-implicit, MAP)")
    ratios = {}
    for key, (label, num, den) in pairs.items():
        ratios[key] = statistics.median(n / d for n, d in zip(times[num], times[den]))
        print(f"  ratio {key} {label:6s} {ratios[key]:6.3f} (median of paired ratios; "
              f"{med[num] / med[den]:.3f} as a ratio of medians)")
    return ratios


# -- replica exchange against the same rows untempered; Pyro's NUTS as the anchor ---------------
def _explaining_away():
    """Issue 20's explaining-away problem (the tests' module): ``(module, w, x)``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import explaining_away

    w, x = explaining_away.problem()
    return explaining_away, w.to(DEVICE), x.to(DEVICE)


def tempered_case(name, model, x, levels, ladders, args, thin=10):
    """Per transition: ``t`` tempered (``levels`` x ``ladders`` rows per image) against ``u``
    untempered over ``levels * ladders`` chains, paired, in a rotating order; the
    transitions include the sampler's fixed costs once (a start from prior draws)."""
    transitions = args.transitions
    tempered = ShortRunLangevin(model, metropolis=True, tempering=levels)
    plain = ShortRunLangevin(model, metropolis=True)
    draws = transitions // thin
    variants = {
        "t  tempered": lambda: tempered.sample_chains(
            x, num_chains=ladders, num_draws=draws, warmup_steps=0, thin=thin),
        "u  untempered, same rows": lambda: plain.sample_chains(
            x, num_chains=levels * ladders, num_draws=draws, warmup_steps=0, thin=thin),
    }
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    names = list(variants)
    start = time.perf_counter()
    for r in range(args.repeats):
        for k in names[r % 2:] + names[:r % 2]:
            times[k].append(timed(variants[k]) / transitions)
        if r >= 4 and time.perf_counter() - start > args.budget:
            break
    rows = levels * ladders * x.shape[0]
    print(f"\n== {name}: {x.shape[0]} images, {levels} levels x {ladders} ladders = {rows} "
          f"rows, {transitions} transitions a run, {len(times[names[0]])} repeats ==")
    for k, v in times.items():
        q = statistics.quantiles(v, n=4)
        print(f"  {k:26s} median {statistics.median(v) * 1e3:8.3f} ms/transition "
              f"(IQR {q[0] * 1e3:.3f}-{q[2] * 1e3:.3f})")
    ratio = statistics.median(a / b for a, b in zip(*times.values()))
    print(f"  ratio tempered t/u {ratio:6.3f} (median of paired ratios; "
          f"{statistics.median(times[names[0]]) / statistics.median(times[names[1]]):.3f} as a "
          "ratio of medians)")
    return ratio


def tempered_cases(args):
    """The small model (issue 20's explaining-away, float32) and a default-sized one (the
    MLP generator of ``TrainConfig()``, 28x28, d = 100, 8 images), 12 levels x 12 / 4
    ladders: ``max(t/u)``."""
    module, w, x = _explaining_away()
    small = tempered_case("explaining-away (16 pixels, d 10)", module.make_model(w), x, 12, 12,
                          args)
    torch.manual_seed(0)
    norm = TrainConfig().network.input_norm
    network = MLPGenerator(100, input_norm=norm).to(DEVICE)
    images = torch.rand(8, 1, 28, 28, device=DEVICE)
    big = tempered_case("MLP (default-sized: 28x28, d 100)", make_model(network), images, 12, 4,
                        args)
    if not args.analyze_scale:
        return max(small, big)
    # analyze's ladder (12 levels x 8 ladders) on 16 images: rows enough that the arithmetic,
    # not the per-operation cost, sets a transition's time, as in an analysis (64 images)
    many = torch.rand(16, 1, 28, 28, device=DEVICE)
    scale = tempered_case("MLP at analyze's ladder (28x28, d 100)", make_model(network), many,
                          12, 8, args)
    return max(small, big, scale)


def nuts_anchor(args):
    """Pyro's NUTS on the explaining-away model (float64, from Pyro's default init),
    ``args.nuts_chains`` chains one after another within ``args.nuts_budget`` seconds."""
    torch.set_default_dtype(torch.float64)
    try:
        module, w, x = _explaining_away()
        inclusion, small, _ = module.exact(w, x)
        model = module.make_model(w)
        start = time.perf_counter()
        chains, iterations = [], 0

        class OutOfBudget(Exception):
            pass

        def hook(kernel, params, stage, i):
            nonlocal iterations
            iterations += 1
            if time.perf_counter() - start > args.nuts_budget:
                raise OutOfBudget

        per_chain = args.nuts_warmup + args.nuts_draws
        for c in range(args.nuts_chains):
            pyro.set_rng_seed(c)
            mcmc = MCMC(NUTS(model), num_samples=args.nuts_draws, warmup_steps=args.nuts_warmup,
                        num_chains=1, hook_fn=hook, disable_progbar=True)
            try:
                mcmc.run(x)
            except OutOfBudget:
                break
            chains.append(mcmc.get_samples()["z"])
        seconds = time.perf_counter() - start
        total = args.nuts_chains * per_chain
        print(f"\n== Pyro NUTS on the explaining-away model: {args.nuts_chains} chains x "
              f"({args.nuts_warmup} warm-up + {args.nuts_draws} draws), budget "
              f"{args.nuts_budget:.0f} s ==")
        print(f"  {seconds:.1f} s, {len(chains)} chains finished, {iterations} of {total} "
              f"iterations ({seconds / max(iterations, 1):.2f} s an iteration)")
        if chains:
            z = torch.stack(chains)  # [chains, draws, images, dim]
            inc, sm = module.estimates({"z": z})
            e_inc, e_small = (inc - inclusion).abs(), (sm - small).abs()
            print(f"  max error inclusion {e_inc.max():.3f}, P(|z|<=0.2) {e_small.max():.3f}; "
                  f"mean error {torch.cat([e_inc, e_small]).mean():.4f}")
            if len(chains) > 1:
                import arviz as az

                rhat = az.rhat(az.convert_to_dataset(z.numpy())).to_array().values
                print(f"  max split R-hat {rhat.max():.3f}")
    finally:
        torch.set_default_dtype(torch.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="repeats per case (at most)")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="seconds per case after which no new repeat starts (min. 5)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads (default: the cores this process may use)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step")
    parser.add_argument("--compile-conv", action="store_true",
                        help="time the compiled step on the conv generator too")
    parser.add_argument("--tempered-only", action="store_true",
                        help="only the tempered transition against the untempered one")
    parser.add_argument("--analyze-scale", action="store_true",
                        help="also the tempered case at analyze's ladder (16 images x 12 levels "
                             "x 8 ladders = 1,536 rows; a few minutes)")
    parser.add_argument("--transitions", type=int, default=400,
                        help="transitions per tempered / untempered run (default 400: runs "
                             "under infer.chains.SHORT_RUN = 200 go through Pyro, not the "
                             "derived graph every analysis uses)")
    parser.add_argument("--nuts", action="store_true",
                        help="only Pyro's NUTS on the explaining-away model (the anchor)")
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-warmup", type=int, default=100)
    parser.add_argument("--nuts-draws", type=int, default=100)
    parser.add_argument("--nuts-budget", type=float, default=300.0,
                        help="seconds after which NUTS stops (default 300)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    args.peak = gemm_gflops()
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} "
          f"threads, float32, {DEVICE}; fp32 GEMM 1024^3: {args.peak:.1f} GFLOP/s")
    if args.nuts:
        nuts_anchor(args)
        return
    if args.tempered_only:
        print(f"tempered_vs_untempered_max_ratio={tempered_cases(args):.3f}")
        return
    norm = TrainConfig().network.input_norm  # the default generator: fixed column norms
    mlp = run_case("MLP (authors' MNIST)", MLPGenerator(100, input_norm=norm), (1, 28, 28), 100,
                   args, compiled=not args.no_compile)
    conv = run_case("Conv", ConvGenerator(64, (1, 28, 28), input_norm=norm), (1, 28, 28), 64,
                    args, compiled=args.compile_conv and not args.no_compile)
    print()
    print(f"HMC c/a: MLP {mlp['hmc']:.3f}, conv {conv['hmc']:.3f}")
    if "compiled" in conv:
        print(f"compiled k/a' on the conv generator: {conv['compiled']:.3f}")
    print(f"kernel_default_vs_handwritten_max_ratio={max(mlp['default'], conv['default']):.3f}")
    print(f"kernel_vs_handwritten_max_ratio={max(mlp['explicit'], conv['explicit']):.3f}")
    if "compiled" in mlp:
        print(f"compiled_vs_handwritten_ratio={mlp['compiled']:.3f}")
    print(f"generic_vs_package_ratio={max(mlp['generic'], conv['generic']):.3f}")
    print(f"tempered_vs_untempered_max_ratio={tempered_cases(args):.3f}")


if __name__ == "__main__":
    main()
