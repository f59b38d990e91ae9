"""Issue 20's explaining-away model (tests/explaining_away.py): exact answers by enumerating the
1,024 gate patterns against ``sample_chains``, tempered and not, from prior draws
(over-dispersed starts): seconds, max and mean error of the inclusion probabilities and of
P(|z| <= 0.2), max split R-hat, and for a ladder its betas, swap acceptance, round trips and
the evidence's error against the exact log p(x).

    OMP_NUM_THREADS=1 python benchmarks/explaining_away.py \
        "seed=1, tempering=12, num_chains=12, num_draws=200, warmup_steps=800, thin=10, \
         prior_step='semi-implicit'"

Each argument is one run's keywords (tempering, pair_move, prior_refresh and the kernel's
options go to ShortRunLangevin, the rest to sample_chains).
"""
import os
import sys
import time

import arviz as az
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from explaining_away import estimates, exact, make_model, problem
from pyro_sparsegen import ShortRunLangevin

torch.set_default_dtype(torch.float64)
w, x = problem()
inclusion, small, evidence = exact(w, x)
model = make_model(w)


KERNEL = {"prior_step", "step_size", "crossing", "adapt_ladder", "init", "adapt_pairs"}


def run(seed=1, tempering=None, pair_move=None, prior_refresh=True, **kw):
    extra = {k: kw.pop(k) for k in list(kw) if k in KERNEL}
    torch.manual_seed(seed)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=tempering, pair_move=pair_move,
                              prior_refresh=prior_refresh, **extra)
    tick = time.perf_counter()
    samples, stats = kernel.sample_chains(x, **kw)
    seconds = time.perf_counter() - tick
    inc, sm = estimates(samples)
    e_inc, e_small = (inc - inclusion).abs(), (sm - small).abs()
    rhat = az.rhat(az.convert_to_dataset(samples["z"].numpy())).to_array().values
    print(f"tempering={tempering} pair_move={pair_move} refresh={prior_refresh} {kw} {extra}: "
          f"{seconds:.1f} s; max error "
          f"inclusion {e_inc.max():.3f}, P(|z|<=0.2) {e_small.max():.3f}; mean error "
          f"{torch.cat([e_inc, e_small]).mean():.4f}; max split R-hat {rhat.max():.3f}")
    if tempering is not None:
        print("  beta (image 0):", stats["beta"][:, 0].numpy().round(4).tolist())
        print("  swap acceptance min/max:", float(stats["swap_accept_prob"].min()),
              float(stats["swap_accept_prob"].max()))
        print("  round trips per ladder min/median:", int(stats["round_trips"].min()),
              float(stats["round_trips"].double().median()))
        err = (stats["log_marginal_likelihood"] - evidence).abs()
        mcse = stats["log_marginal_likelihood_mcse"]
        print(f"  evidence: max |error| {err.max():.3f} nats, max error / (3 MCSE + 0.05) "
              f"{(err / (3 * mcse + 0.05)).max():.2f}")


for spec in sys.argv[1:]:
    run(**eval(f"dict({spec})"))
