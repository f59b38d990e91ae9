"""When a derived graph pays: ``sample_chains`` with and without ``derive`` at 10 and 110
transitions, on a small model (the explaining-away one of the tests) and on the default
network's size (an MLP generator, 28x28 images, d = 100, 64 images), plain and tempered (12
levels). The difference of the two lengths is the per-step cost; the intercept the tracing.
It sets :data:`pyro_sparsegen.infer.chains.SHORT_RUN`.

Run: ``OMP_NUM_THREADS=1 python benchmarks/derive_breakeven.py`` (about 3 minutes).
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from explaining_away import make_model, problem
from pyro_sparsegen import MLPGenerator, ShortRunLangevin, SparseGenerator


def seconds(model, x, levels, derive, n):
    torch.manual_seed(0)
    kernel = ShortRunLangevin(model, metropolis=True, tempering=levels, derive=derive)
    tick = time.perf_counter()
    kernel.sample_chains(x, num_chains=4, num_draws=n, warmup_steps=0, thin=1)
    return time.perf_counter() - tick


def main():
    torch.set_default_dtype(torch.float64)
    w, x = problem()
    # a first run warms torch's dispatch up (not counted)
    seconds(make_model(w), x, None, True, 10)
    cases = (("explaining-away", make_model(w), x),
             ("MLP 28x28, d = 100, 64 images",
              SparseGenerator(MLPGenerator(100, (1, 28, 28))), torch.rand(64, 1, 28, 28)))
    print("| model | levels | path | ms per transition | fixed cost (s) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, model, data in cases:
        for levels in (None, 12):
            for derive in (True, False):
                short, long = (seconds(model, data, levels, derive, n) for n in (10, 110))
                step = (long - short) / 100
                print(f"| {name} | {levels or 1} | {'graph' if derive else 'Pyro'} | "
                      f"{1000 * step:.1f} | {short - 10 * step:.2f} |", flush=True)


if __name__ == "__main__":
    main()
