"""Plumbing of the scripts in ``analyses/``: arguments, which models to train (once, into
``OUT/models/<key>/``, reused by every script), cached evaluations and the report's layout.
The protocols themselves are :mod:`pyro_sparsegen.evaluation`.

Every script has ``run(ws) -> Section`` (compute, write its figures, return its Markdown and
numbers) and ``main(argv=None)``; ``run_all.py`` builds one :class:`Workspace` and calls every
``run`` on it, so models, codes and denoised reconstructions are computed once.

Model keys:

- ``sparse``: the package's default :class:`~pyro_sparsegen.TrainConfig` (annealed
  spike-and-slab prior), trained by :func:`pyro_sparsegen.train`;
- ``sparse_w<W>``: the same with ``prior.final_slab_weight = W`` (the sparsity sweep);
- ``dense_abp``: classic ABP (N(0, 1) prior) at the sparse model's settings and latent size;
- ``dense_matched``: the same with latent size = the sparse model's mean number of active
  coordinates on its *training* codes (``|z| >`` the config's threshold, 0.2), at least 1;
- ``dense_d<D>``: dense ABP with latent size D (the sparsity frontier);
- ``beta_vae``, ``vsc``: :func:`pyro_sparsegen.baselines.train_baseline` with the baselines'
  own recommended training (:func:`pyro_sparsegen.baselines.recommended`);
- ``sparse_learned_scale`` (:data:`LEARNED_SCALE`): the sparse model with
  ``prior.kind = "learned-scale"`` (slab weights and slab scales per dimension, learned after
  the annealing), on the main models' seeds; trained with the main models only with
  ``--learned-scale`` (``learned_scale.py`` compares it with ``sparse``);
- ``sparse_e<N>``: the sparse model trained for N epochs (the mode's ``long_epochs``, 60 and
  100, other than its own), on the main models' seeds; with ``--long-runs`` or in the full
  mode (``long_runs.py``: the inactive-fraction target of longer runs).

Seeds: the five main models (the core comparison) are trained on several seeds — 5 in the
full mode, 3 with ``--quick``, 2 in the tests' ``--tiny`` — (``OUT/models/<key>`` for the
first, ``<key>_seed<k>`` for the others), side by side in ``--jobs`` processes
(:func:`train_core_models`) before ``run_all``'s scripts run; the tables report mean ± sd over
seeds and the headline verdicts come from seed-level paired differences
(:func:`seed_verdict`, :func:`threshold_verdict`). The matched budget is fixed per seed from
that seed's sparse training codes. The sweep, frontier, variant-prior and transfer models have
one seed and run only with ``--sweeps`` outside the full mode (:attr:`Settings.run_sweeps`).
"""

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor",
                        category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import pyro_sparsegen as psg  # noqa: E402
from pyro_sparsegen import baselines, cli, files, plots  # noqa: E402
from pyro_sparsegen import config as train_config  # noqa: E402
from pyro_sparsegen import evaluation as ev  # noqa: E402
from pyro_sparsegen.diagnostics import format_number, markdown_table  # noqa: E402
from pyro_sparsegen.distributions import ACTIVE_THRESHOLD  # noqa: E402, F401 (the scripts')
from pyro_sparsegen.errors import (  # noqa: E402
    SparsegenError, first_line, is_user_error, report_bug)
from pyro_sparsegen.runtime import resolve_device  # noqa: E402

MODEL_KEYS = ("sparse", "dense_abp", "dense_matched", "beta_vae", "vsc")
LEARNED_SCALE = "sparse_learned_scale"  # the candidate default of issue 22, item 2
LONG_PREFIX = "sparse_e"  # sparse_e<N>: the sparse model trained for N epochs (--long-runs)
BASELINE_KINDS = ("beta_vae", "vsc")
NOISE_LEVELS = ev.NOISE_LEVELS
REQUEST = "analysis_request.json"  # what a model folder was trained for (written when done)
EVAL_BATCH = 500  # images per encoder call in evaluation (chains are per image: any size works)
# held-out images a training run evaluates after each epoch (its metrics.csv and collapse
# watch; the analyses themselves use every test image): fewer in the quick mode
MONITOR_IMAGES = {"full": 500, "quick": 250, "tiny": 500}

# Mode settings. --quick: 10 epochs, 3 seeds of the five main models trained two at a time on
# 2 CPU cores, every test image (1,000 of mnist5k); the baselines train until their validation
# ELBO stops improving (10..60 epochs): 13.6 minutes on an idle 2-core machine (2026-12-04, no
# --sweeps; the 15 core models in 4.7 minutes). One seed with the sweeps took about 20
# minutes: 11 ABP models of ~45 s (3 main, 2 sweep, 4 frontier beyond the main
# ones), 2 baselines of about a minute, 7 variant-prior models (~45 s; the hierarchical ones
# ~110 s), 5 small transfer models (~80 s in all), the evaluation ~4 min (denoising: 3 variants
# x 3 noise levels x 5 repeats of 1,000 images per model). The full mode: the authors' 100
# epochs for every model built from base_config (the package's default config has 20; the
# transfer runs keep the config's length), 5 seeds, the sweeps included. --tiny (hidden, for
# the tests): a few hundred digits, a small network, two seeds, a short evidence run.
# "evidence": (warm-up, draws, thin) of variant_priors' replica-exchange run. "bayes_denoise":
# the test images and sampler settings of bayes_denoise.py (the labelled variant; run by
# run_all.py in the full mode or with --bayes-denoise): 200 class-spread test images and the
# evaluation's default sampler (~2 minutes per model and noise level on one CPU thread,
# docs/experiments.md), a few images and a token sampler in the tests' --tiny.
BAYES_DENOISE = {"images": 200, "levels": ev.bayes.LEVELS, "chains": ev.bayes.CHAINS,
                 "warmup": ev.bayes.WARMUP, "draws": ev.bayes.DRAWS, "thin": ev.bayes.THIN}
# the longer runs of the sparse model the inactive-fraction target also holds for (issue 22,
# item 4: "in separate 60- and 100-epoch runs of the default"); --long-runs, or the full mode
LONG_EPOCHS = (60, 100)
MODES = {
    "full": {"epochs": 100, "seeds": 5, "test_images": None, "repeats": ev.REPEATS,
             "baseline_max_epochs": 200, "sweep": (0.2, 0.1, 0.05, 0.01),
             "frontier": (4, 8, 12, 20, 50, 100), "fid_epochs": 10, "evidence": (400, 100, 2),
             "bayes_denoise": BAYES_DENOISE, "long_epochs": LONG_EPOCHS},
    "quick": {"epochs": 10, "seeds": 3, "test_images": None, "repeats": ev.REPEATS,
              "baseline_max_epochs": 60, "sweep": (0.1, 0.01),
              "frontier": (4, 8, 12, 20, 50, 100), "fid_epochs": 10, "evidence": (400, 100, 2),
              "bayes_denoise": BAYES_DENOISE, "long_epochs": LONG_EPOCHS},
    "tiny": {"epochs": 3, "seeds": 2, "test_images": 100, "repeats": 2,
             "baseline_max_epochs": 5, "sweep": (0.1,), "frontier": (2, 4, 6), "fid_epochs": 3,
             "train_images": 200, "latent_dim": 6, "hidden": (32,), "batch_size": 25,
             "noise_scale": 0.1, "evidence": (60, 30, 1),
             "bayes_denoise": {"images": 4, "levels": 2, "chains": 2, "warmup": 10, "draws": 5,
                               "thin": 1}, "long_epochs": (4, 5)},
}
PROBE_LABELS = ev.LABEL_COUNTS


class AnalysisError(SparsegenError):
    """A problem the user can fix (printed as one line, no traceback)."""


def label(key):
    """Human-readable name of a model key."""
    names = {"sparse": "sparse (annealed spike-and-slab ABP)", "dense_abp": "dense ABP",
             "dense_matched": "dense ABP, matched budget", "beta_vae": "β-VAE", "vsc": "VSC",
             LEARNED_SCALE: "sparse, learned slab weights and scales",
             None: "noisy input, no model (floor)", "noisy_input": "noisy input (floor)"}
    if key is not None and key.startswith("sparse_w"):
        return f"sparse, final w = {key[len('sparse_w'):]}"
    if key is not None and key.startswith(LONG_PREFIX):
        return f"sparse, {key[len(LONG_PREFIX):]} epochs"
    if key is not None and key.startswith("dense_d"):
        return f"dense ABP, d = {key[len('dense_d'):]}"
    return names.get(key, key)


# ------------------------------------------------------------------------------------------
# Arguments


@dataclasses.dataclass
class Settings:
    data: str = "mnist5k"
    out: str = "analysis"
    quick: bool = False
    tiny: bool = False
    runs: str = None
    device: str = "auto"
    seed: int = 0
    seeds: int = None
    threads: int = None
    beta: float = 1.0
    progress: bool = False
    sweeps: bool = False
    jobs: int = None
    learned_scale: bool = False
    bayes_denoise: bool = False
    long_runs: bool = False
    config: str = None  # --config: a partial training config, the recipe under test
    recipe: dict = None  # its mapping (read once, checked by parse_settings)

    @property
    def mode(self):
        return "tiny" if self.tiny else "quick" if self.quick else "full"

    @property
    def run_sweeps(self):
        """Whether the one-seed extras run: the slab-weight sweep, the sparsity frontier beyond
        the main models, the variant priors and the transfer runs (``--sweeps``; always in
        the full mode)."""
        return self.sweeps or self.mode == "full"

    @property
    def run_bayes_denoise(self):
        """Whether ``run_all.py`` runs the Bayes denoising variant (``--bayes-denoise``; always
        in the full mode)."""
        return self.bayes_denoise or self.mode == "full"

    @property
    def run_long_runs(self):
        """Whether the sparse model is also trained for the mode's ``long_epochs``
        (``--long-runs``; always in the full mode)."""
        return self.long_runs or self.mode == "full"

    @property
    def options(self):
        """The mode's settings (:data:`MODES`)."""
        return MODES[self.mode]


def parser(prog, description, *, jobs=False):
    """The scripts' shared arguments: a :class:`pyro_sparsegen.cli.ArgumentParser` (a bad
    command line raises :class:`~pyro_sparsegen.cli.UsageError`, one line); ``jobs``: with
    ``--jobs`` (``run_all.py``'s pool of training processes)."""
    p = cli.ArgumentParser(prog=prog, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist5k",
                   help="data spec (mnist5k, digits, idx:DIR, npz:PATH, ...; default mnist5k)")
    p.add_argument("--out", required=True, help="output folder (models go to OUT/models/)")
    p.add_argument("--quick", action="store_true",
                   help=f"{MODES['quick']['epochs']} epochs per model, "
                        f"{MODES['quick']['seeds']} seeds of the main models, no sweeps unless "
                        f"--sweeps (without it: the full mode, {MODES['full']['epochs']} epochs)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"training seeds of the main models (default {MODES['full']['seeds']}; "
                        f"{MODES['quick']['seeds']} with --quick)")
    p.add_argument("--sweeps", action="store_true",
                   help="also the one-seed extras with --quick: the slab-weight sweep, the "
                        "sparsity frontier beyond the main models, the variant priors and the "
                        "transfer runs (the full mode always runs them)")
    p.add_argument("--learned-scale", action="store_true",
                   help="also the sparse model with learned slab weights and scales (prior "
                        "kind learned-scale) on the main models' seeds, and run_all's "
                        "comparison of it with the sparse model (learned_scale.py)")
    p.add_argument("--long-runs", action="store_true",
                   help="also the sparse model trained for 60 and 100 epochs on the main "
                        "models' seeds: the inactive-fraction target of longer runs "
                        "(long_runs.py; always in the full mode; about 8 minutes more on 2 "
                        "CPU cores with --quick)")
    p.add_argument("--runs", metavar="DIR",
                   help="reuse the finished models in DIR/models/<key>/ (or DIR/<key>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=int, default=0,
                   help="first training seed and the seed of subsets and noise (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default 1 on CPU: the small matrix "
                        "products gain little from more and lose much on shared cores)")
    p.add_argument("--beta", type=float, default=1.0, help="the β-VAE's β (default 1)")
    p.add_argument("--config", metavar="FILE",
                   help="a partial training config (TOML or JSON, the format of "
                        "pyro-sparsegen train --config) laid over the package's default for "
                        "every model built from it: a recipe under test (the data, device, "
                        "seeds and epochs come from the command line and the mode)")
    p.add_argument("--bayes-denoise", action="store_true",
                   help="run_all.py: also the Bayes denoising variant (the tempered exact "
                        "sampler on 200 test images; always in the full mode)")
    if jobs:
        p.add_argument("--jobs", type=int, default=None,
                       help="processes that train the main models' missing seeds side by side "
                            "before the analyses, one torch thread each (default 2 on CPU, 1 "
                            "on CUDA)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_settings(prog, description, argv=None, *, jobs=False):
    """The :class:`Settings` of a command line (``jobs``: with ``--jobs``); a bad one: one
    line on stderr, exit status 2."""
    try:
        args = parser(prog, description, jobs=jobs).parse_args(argv)
    except cli.UsageError as e:
        _fail_args(prog, first_line(e))
    if args.seed < 0:
        _fail_args(prog, "--seed must be non-negative")
    if args.seeds is not None and args.seeds < 1:
        _fail_args(prog, "--seeds must be positive")
    if args.threads is not None and args.threads < 1:
        _fail_args(prog, "--threads must be positive")
    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        _fail_args(prog, "--jobs must be positive")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        _fail_args(prog, "--beta must be a non-negative number")
    if args.runs is not None and not os.path.isdir(args.runs):
        _fail_args(prog, f"--runs {args.runs}: no such folder")
    recipe = None
    if args.config is not None:
        try:
            recipe = read_recipe(args.config)
        except psg.ConfigError as e:
            _fail_args(prog, f"--config {first_line(e)}")
    return Settings(data=args.data, out=args.out, quick=args.quick, tiny=args.tiny,
                    runs=args.runs, device=args.device, seed=args.seed, seeds=args.seeds,
                    threads=args.threads, beta=args.beta, progress=sys.stderr.isatty(),
                    sweeps=args.sweeps, jobs=getattr(args, "jobs", None),
                    learned_scale=args.learned_scale,
                    bayes_denoise=args.bayes_denoise, long_runs=args.long_runs,
                    config=args.config, recipe=recipe)


# what a --config file may not set: the command line and the mode do
RECIPE_FIXED = {("data",): "--data", ("device",): "--device", ("seed",): "--seed",
                ("model",): None, ("optim", "epochs"): "the mode (--quick)"}


def read_recipe(path):
    """The mapping of a ``--config`` file, checked: a valid partial training config that sets
    nothing the command line or the mode sets (:data:`RECIPE_FIXED`). A bad one is a
    one-line :class:`pyro_sparsegen.ConfigError`."""
    data = train_config.read_mapping(path)
    if not isinstance(data, dict):
        raise psg.ConfigError(f"{path}: a config must be a mapping")
    for (section, *name), owner in RECIPE_FIXED.items():
        found = data.get(section)
        if section in data and (not name or (isinstance(found, dict) and name[0] in found)):
            by = f"set by {owner}" if owner else "not supported by the analyses (built-in " \
                "models only)"
            raise psg.ConfigError(f"{path}: {'.'.join([section, *name])} is {by}")
    try:
        psg.TrainConfig.from_dict(data)
    except TypeError as e:
        raise psg.ConfigError(f"{path}: {e}") from None
    except psg.ConfigError as e:
        raise psg.ConfigError(f"{path}: {first_line(e)}") from None
    return data


def _fail_args(prog, message):
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def device_of(name):
    if not (name in ("auto", "cpu", "cuda") or name.startswith("cuda:")):
        raise AnalysisError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    try:
        return resolve_device(name, error=AnalysisError)
    except AnalysisError as e:
        raise AnalysisError(f"--device {name}: {e}") from None


@contextlib.contextmanager
def cpu_threads(settings, device):
    """Limit torch's and the BLAS / OpenMP pools' (scikit-learn's) CPU threads for the run
    (``--threads``; 1 by default on CPU) and put them back afterwards. On a shared 2-core
    machine one thread ran an ABP epoch 3-8x and a logistic regression 15-50x faster."""
    wanted = settings.threads or (1 if device.type == "cpu" else None)
    if wanted is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        with threadpool_limits(limits=wanted):
            yield
    finally:
        torch.set_num_threads(before)


def main(script, run, description, argv=None, *, save=True, jobs=False):
    """A script's ``main``: parse (``jobs``: with ``--jobs``), build the workspace, ``run``,
    write ``OUT/<script>.md`` and ``.json`` (with ``save``), print the tables. Returns the exit
    status; user errors are one line on stderr."""
    prog = os.path.basename(script)
    name = os.path.splitext(prog)[0]
    settings = parse_settings(prog, description, argv, jobs=jobs)
    try:
        ws = Workspace(settings)
        with cpu_threads(settings, ws.device):
            section = run(ws)
        if save:
            ws.write_text(f"{name}.md", section.markdown(level=1))
            ws.write_json(f"{name}.json", section.results)
    except USER_ERRORS as e:
        sys.stderr.write(f"{prog}: error: {first_line(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - not a user's error: a bug, with its traceback
        if is_user_error(e):
            sys.stderr.write(f"{prog}: error: {first_line(e)}\n")
            return 1
        return report_bug(prog, e)
    print(section.markdown(level=1))
    return 0


USER_ERRORS = (AnalysisError, psg.DataError, psg.ConfigError, psg.CheckpointError,
               psg.TrainingError, OSError)


# ------------------------------------------------------------------------------------------
# Results and layout


@dataclasses.dataclass
class Section:
    """One script's output: a title, Markdown blocks (tables, text), figure paths relative to
    OUT, and ``results`` ({model key: {field: value}} plus other keys) for results.json."""

    name: str
    title: str
    blocks: list
    figures: list
    results: dict

    def markdown(self, level=2):
        lines = ["#" * level + " " + self.title, ""]
        for block in self.blocks:
            lines += [block, ""]
        for caption, path in self.figures:
            lines += [f"![{caption}]({path})", ""]
        return "\n".join(lines)


MISSING = "—"  # a number not defined for this model, in the report's tables


def fmt(value, digits=3):
    """A number as table text (:func:`pyro_sparsegen.diagnostics.format_number`); ``None`` /
    NaN (not defined for this model) as an em dash."""
    return format_number(value, digits, missing=MISSING)


def fmt_mean_sd(mean, sd, scale=1.0, digits=1):
    """``mean ± sd`` (scaled), or ``mean`` alone when ``sd`` is ``None``."""
    if mean is None:
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if sd is None else f"{text} ± {sd * scale:.{digits}f}"


def fmt_comparison(comparison, scale=100.0, digits=1):
    """``+1.2 ± 0.8 (wins)``: the sparse model's difference, its standard error, verdict."""
    if comparison is None:
        return "—"
    difference, se = comparison["difference"] * scale, comparison["se"] * scale
    return f"{difference:+.{digits}f} ± {se:.{digits}f} ({comparison['verdict']})"


# ------------------------------------------------------------------------------------------
# Seed-level verdicts

CONFIDENCE = 0.95  # of the intervals over seeds (two-sided Student t, df = seeds - 1)
ACCURACY_MARGIN = 0.005  # "not worse" for an accuracy: the lower bound above -0.5 points
RELATIVE_MARGIN = 0.05  # ... for an MSE or FID: above -5 % of the rival's seed mean
ONE_SEED = "one seed: no verdict"
NOT_MEASURED = "not measured"
VERDICT_RULE = (
    "Verdicts come from seed-level paired differences: for each training seed, sparse − rival "
    "on the same test images and noise draws (the evaluation's noise draws averaged inside the "
    "seed), oriented so that positive means the sparse model is better (for MSE and FID: "
    "rival − sparse); over the n seeds, the mean difference ± the half-width of its "
    f"{CONFIDENCE:.0%} Student-t interval (df = n − 1). **wins**: the lower bound is above 0; "
    f"**not worse**: it is above −margin ({100 * ACCURACY_MARGIN:g} points for an accuracy, "
    f"{RELATIVE_MARGIN:.0%} of the rival's seed mean for an MSE or FID); **loses** otherwise. "
    "A threshold (inactive fraction, class Jaccard) is *met* when the whole interval of the "
    "seed mean is on its side, *missed* when the mean is not, *undecided* otherwise. With one "
    "seed there is no interval and no verdict.")


def t_quantile(n, confidence=CONFIDENCE):
    """The two-sided Student-t quantile of ``n`` values (df = n - 1): 4.303 for n = 3 at 95 %."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def mean_interval(values, confidence=CONFIDENCE):
    """``(mean, half-width of its Student-t interval or None for one value, n)`` of the finite
    numbers among ``values`` (``None`` / NaN dropped); ``(None, None, 0)`` when none is left."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None, None, 0
    if x.size == 1:
        return float(x[0]), None, 1
    return (float(x.mean()), t_quantile(x.size, confidence) * float(x.std(ddof=1)) /
            math.sqrt(x.size), int(x.size))


def seed_verdict(sparse, rival, *, higher_is_better=True, margin=0.0, relative_margin=None):
    """The sparse model against a rival on one figure, from per-seed values.

    :param sparse: the sparse model's value per training seed (a list of n numbers).
    :param rival: the rival's per seed, paired with ``sparse`` by position; one value (a
        reference without training seeds: the noisy-input floor) stands for every seed. A pair
        with a ``None`` / NaN is dropped.
    :param bool higher_is_better: orientation: the differences are ``sparse - rival`` (an
        accuracy) or ``rival - sparse`` (an MSE, a FID), so that positive = sparse better.
    :param float margin: "not worse" when the lower bound is above ``-margin``.
    :param relative_margin: instead, the margin as a fraction of ``|mean(rival)|``.
    :return: ``{"mean_difference", "interval": [lo, hi] or None, "n_seeds", "margin",
        "verdict"}``: *wins* when ``lo > 0``, *not worse* when ``lo > -margin``, *loses*
        otherwise (:data:`VERDICT_RULE`); one seed: no interval, :data:`ONE_SEED`; no pair:
        :data:`NOT_MEASURED`.
    """
    a = [None if v is None else float(v) for v in sparse]
    b = [None if v is None else float(v) for v in rival]
    if len(b) == 1:
        b = b * len(a)
    if len(a) != len(b):
        raise ValueError(f"sparse and rival need one value per seed, got {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and
             math.isfinite(x) and math.isfinite(y)]
    if relative_margin is not None:
        reference = mean_interval([y for _, y in pairs])[0]
        margin = None if reference is None else relative_margin * abs(reference)
    differences = [(x - y) if higher_is_better else (y - x) for x, y in pairs]
    mean, half, n = mean_interval(differences)
    out = {"mean_difference": mean, "interval": None, "n_seeds": n, "margin": margin,
           "verdict": NOT_MEASURED if n == 0 else ONE_SEED}
    if half is not None:
        low, high = mean - half, mean + half
        out["interval"] = [low, high]
        out["verdict"] = "wins" if low > 0 else "not worse" if low > -margin else "loses"
    return out


def threshold_verdict(values, threshold, *, at_least):
    """A figure of the sparse model against a fixed threshold, from per-seed values.

    :param values: the figure per training seed (``None`` / NaN dropped).
    :param float threshold: the target's bound.
    :param bool at_least: the target is ``figure >= threshold`` (else ``figure < threshold``).
    :return: ``{"mean", "interval": [lo, hi] of the seed mean or None, "threshold",
        "mean_difference" (mean - threshold, or threshold - mean: positive = on the target's
        side), "n_seeds", "verdict"}``: *met* when the whole interval is on the target's side,
        *missed* when the mean is not, *undecided* otherwise; one seed: :data:`ONE_SEED`.
    """
    mean, half, n = mean_interval(values)
    out = {"mean": mean, "interval": None, "threshold": threshold, "n_seeds": n,
           "mean_difference": None if mean is None else
           (mean - threshold if at_least else threshold - mean),
           "verdict": NOT_MEASURED if n == 0 else ONE_SEED}
    if half is not None:
        low, high = mean - half, mean + half
        out["interval"] = [low, high]
        inside = low >= threshold if at_least else high < threshold
        on_side = mean >= threshold if at_least else mean < threshold
        out["verdict"] = "met" if inside else "undecided" if on_side else "missed"
    return out


def fmt_verdict(verdict, scale=1.0, digits=1, *, key="mean_difference", signed=True):
    """``+1.2 ± 0.8 (3 seeds): wins`` — the seed mean of a :func:`seed_verdict` (``key``) ±
    the half-width of its interval, the seeds and the verdict; one seed: ``+1.2 (one seed: no
    verdict)``."""
    if verdict is None or verdict.get(key) is None:
        return NOT_MEASURED
    sign = "+" if signed else ""
    text = f"{verdict[key] * scale:{sign}.{digits}f}"
    if verdict["interval"] is None:
        return f"{text} ({verdict['verdict']})"
    half = (verdict["interval"][1] - verdict["interval"][0]) / 2
    return f"{text} ± {half * scale:.{digits}f} ({verdict['n_seeds']} seeds): " \
        f"{verdict['verdict']}"


def md_table(header, rows):
    """A Markdown table (:func:`pyro_sparsegen.diagnostics.markdown_table`); a ``|`` inside a
    cell (``|z|``) is escaped."""
    return markdown_table(header, rows, missing=MISSING)


def finite_or_none(value):
    """JSON-safe: NaN and inf become ``None``; numpy scalars and arrays become Python ones."""
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def merge(into, results):
    """Merge ``{key: {field: value}}`` dicts one level deep (a model's ``seed_values``, which
    every script adds to, two levels)."""
    for key, value in results.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            for field, item in value.items():
                if field == "seed_values" and isinstance(into[key].get(field), dict):
                    into[key][field].update(item)
                else:
                    into[key][field] = item
        else:
            into[key] = value
    return into


def sigma_text(sigma):
    return f"{sigma:g}"


# a matplotlib figure from the object API (no pyplot state, nothing shown), and its atomic
# write: the package's own
figure, save_figure = plots.new_figure, plots.save_figure


# ------------------------------------------------------------------------------------------
# Models


@dataclasses.dataclass
class Loaded:
    key: str
    seed: int  # the training seed
    model: object
    config: object
    encoder: object
    folder: str
    trained_seconds: float  # None when reused
    extra: dict  # the checkpoint's extra (early stopping of a baseline)
    trained_by: str = None  # "pool" (train_core_models), "main process" or None (reused)


class Workspace:
    """Data, models, codes and evaluations of one analysis, each computed once.

    :ivar train: training split (:class:`~pyro_sparsegen.ImageData`).
    :ivar test: test split (a class-spread subset with ``--tiny``).
    """

    def __init__(self, settings):
        self.settings = settings
        self.mode = settings.options
        self.out = os.path.abspath(settings.out)
        self.device = device_of(settings.device)
        files.output_folder(self.out, error=AnalysisError)
        # monitor: what training evaluates after every epoch (metrics.csv), a class-spread
        # subset to keep the per-epoch cost down; the analyses themselves use every test image
        self.train, self.monitor, self.test = self.load_splits(settings.data)
        self._cache = {}
        self.timings = {}
        self.pool_seconds = {}  # run name -> training seconds in train_core_models' pool

    def load_splits(self, spec, image_size=None):
        """``(train, monitor, test)`` of data set ``spec``, shortened as the mode says
        (class-spread subsets)."""
        train = psg.load_data(spec, "train", image_size=image_size)
        test = psg.load_data(spec, "test", image_size=image_size)
        if "train_images" in self.mode:
            train = train.subset(self.spread(train, self.mode["train_images"]))
        if self.mode["test_images"] is not None:
            test = test.subset(self.spread(test, self.mode["test_images"]))
        monitor = test.spread_subset(min(len(test), self.monitor_images),
                                     seed=self.settings.seed)
        return train, monitor, test

    # -- settings derived from the mode --
    @property
    def monitor_images(self):
        """Held-out images a training run evaluates after each epoch (:data:`MONITOR_IMAGES`)."""
        return MONITOR_IMAGES[self.settings.mode]

    def spread(self, data, n):
        """A class-spread, seeded subset of ``n`` positions of ``data``
        (:meth:`pyro_sparsegen.ImageData.spread_rows`)."""
        return data.spread_rows(n, seed=self.settings.seed)

    @property
    def repeats(self):
        return self.mode["repeats"]

    @property
    def seeds(self):
        """Seed indices of the main models (0 .. n-1; training seed = --seed + index)."""
        return list(range(self.settings.seeds or self.mode["seeds"]))

    def seeds_of(self, key):
        return self.seeds if key in MODEL_KEYS or key == LEARNED_SCALE or \
            key.startswith(LONG_PREFIX) else [0]

    @property
    def sweeps(self):
        """Whether the one-seed extras run (:attr:`Settings.run_sweeps`)."""
        return self.settings.run_sweeps

    @property
    def jobs(self):
        """Training processes of :func:`train_core_models` (``--jobs``; 2 on CPU, 1 on CUDA;
        1 in the tiny mode, where a process's start-up outlasts its one-second models)."""
        if self.settings.jobs is not None:
            return self.settings.jobs
        return 2 if self.device.type == "cpu" and self.settings.mode != "tiny" else 1

    @property
    def threshold(self):
        return self.base_config().threshold

    def needs_labels(self, what):
        if self.train.labels is None or self.test.labels is None:
            raise AnalysisError(f"{what} needs labelled data; {self.settings.data} has no labels")

    def probe_label_counts(self):
        """Label counts for the linear probe (as text): 100, 1,000 (those below the training
        set's size) and ``"all"``."""
        return [ev.count_name(n) for n in PROBE_LABELS if n is None or n < len(self.train)]

    def base_config(self, seed=0):
        """The package's default config (with ``--config``'s settings over it), shortened by
        the mode, with training seed ``--seed + seed``."""
        config = psg.TrainConfig() if self.settings.recipe is None else \
            psg.TrainConfig.from_dict(copy.deepcopy(self.settings.recipe))
        config.data.spec = self.settings.data
        config.device = str(self.device)
        config.seed = self.settings.seed + seed
        mode = self.mode
        if mode["epochs"] is not None:
            config.optim.epochs = mode["epochs"]
        if "latent_dim" in mode:
            config.network.latent_dim = mode["latent_dim"]
            config.network.hidden = mode["hidden"]
            config.optim.batch_size = mode["batch_size"]
            config.network.noise_scale = mode["noise_scale"]
        return config.validate()

    def default_final_slab_weight(self):
        """The slab weight the default schedule ends at (read from the config, not assumed)."""
        config = self.base_config()
        per_epoch = math.ceil(len(self.train) / config.optim.batch_size)
        schedule = config.build_schedule(per_epoch)
        return float(schedule(per_epoch * config.optim.epochs).slab_weight)

    def sweep(self):
        """``[(final slab weight, key)]`` of the sparsity sweep, the default model included,
        largest weight first."""
        default = self.default_final_slab_weight()
        def same(w):
            return math.isclose(w, default, rel_tol=1e-9, abs_tol=1e-12)
        weights = sorted({default, *(w for w in self.mode["sweep"] if not same(w))},
                         reverse=True)
        return [(w, "sparse" if same(w) else f"sparse_w{w:g}") for w in weights]

    def long_runs(self):
        """``[(epochs, key)]`` of the longer runs of the sparse model (the mode's
        ``long_epochs``; the main sparse model where its own length is one of them)."""
        own = self.base_config().optim.epochs
        return [(e, "sparse" if e == own else f"{LONG_PREFIX}{e}")
                for e in self.mode["long_epochs"]]

    def frontier(self):
        """``[(latent size, key)]`` of the dense models on the sparsity frontier: the mode's
        sizes, the main dense model's and the matched one's (sharing their runs)."""
        own = self.base_config().network.latent_dim
        matched = self.matched_latent_dim(0)  # the frontier's models have the first seed
        sizes = sorted(set(self.mode["frontier"]) | {own, matched})
        return [(d, "dense_abp" if d == own else "dense_matched" if d == matched
                 else f"dense_d{d}") for d in sizes]

    def baseline_request(self, key, seed=0):
        """``(config, early stopping, options)`` of baseline ``key``:
        :func:`pyro_sparsegen.baselines.recommended` with the mode's epoch cap."""
        config, stopping, options = baselines.recommended(
            key, self.base_config(seed), max_epochs=self.mode["baseline_max_epochs"])
        if key == "beta_vae":
            options["beta"] = self.settings.beta
        if "hidden" in self.mode:
            options["encoder_hidden"] = tuple(self.mode["hidden"])
        return config, stopping, options

    # -- models --
    def model(self, key, seed=0):
        """The trained model ``key`` of seed index ``seed`` (trained now unless a finished
        one exists)."""
        cache = ("model", key, seed)
        if cache not in self._cache:
            self._cache[cache] = self._load_or_train(key, seed)
        return self._cache[cache]

    def loaded_models(self):
        """The models loaded (or trained) so far: ``{(key, seed): Loaded}``, in order."""
        return {k[1:]: v for k, v in self._cache.items() if k[0] == "model"}

    def matched_latent_dim(self, seed=0):
        """round(mean number of active coordinates of the *training* codes of the sparse model
        of seed index ``seed``), at least 1: the latent size of that seed's
        ``dense_matched``."""
        cache = ("matched", seed)
        if cache not in self._cache:
            active = ev.sparsity_summary(self.codes("sparse", seed, "train"))["mean_active"]
            self._cache[cache] = max(1, int(round(active)))
        return self._cache[cache]

    def matched_latent_dims(self):
        """:meth:`matched_latent_dim` of every seed of the main models."""
        return [self.matched_latent_dim(s) for s in self.seeds]

    def _request(self, key, seed):
        """``(kind, config, options, early stopping)``: how model ``key`` is trained."""
        config = self.base_config(seed)
        if key == "sparse":
            return "abp", config, {}, None
        if key == LEARNED_SCALE:
            config.prior.kind = "learned-scale"
            return "abp", config.validate(), {}, None
        if key.startswith(LONG_PREFIX):
            config.optim.epochs = int(key[len(LONG_PREFIX):])
            return "abp", config.validate(), {}, None
        if key.startswith("sparse_w"):
            config.prior.final_slab_weight = float(key[len("sparse_w"):])
            return "abp", config.validate(), {}, None
        if key == "dense_abp":
            return "abp", baselines.dense_config(config), {}, None
        if key == "dense_matched":
            return "abp", baselines.dense_config(config, self.matched_latent_dim(seed)), {}, None
        if key.startswith("dense_d"):
            return "abp", baselines.dense_config(config, int(key[len("dense_d"):])), {}, None
        if key in BASELINE_KINDS:
            config, stopping, options = self.baseline_request(key, seed)
            return key, config, options, stopping
        raise AnalysisError(f"unknown model key {key!r}")

    def folder_name(self, key, seed):
        return key if seed == 0 else f"{key}_seed{seed}"

    def _reusable(self, name, request):
        """A finished run ``name`` from ``--runs``, if any, that was trained for ``request``
        (:meth:`_request_record`): one the analyses trained records its request and is reused
        only for the same one (so a ``--config`` recipe is not answered with the default's
        models); one without a record (``pyro-sparsegen train``'s) is taken as it is."""
        if self.settings.runs is None:
            return None
        for folder in (os.path.join(self.settings.runs, "models", name),
                       os.path.join(self.settings.runs, name)):
            if _finished(folder):
                record = os.path.join(folder, REQUEST)
                if not os.path.exists(record) or same_request(_read_json(record), request):
                    return folder
        return None

    def _load_or_train(self, key, seed):
        name = self.folder_name(key, seed)
        kind, config, options, stopping = self._request(key, seed)
        folder, seconds = self.trained_folder(name, kind, config, options, stopping)
        model, config, state = psg.load_run(folder, device=self.device)
        by = None if seconds is None else "main process"
        if seconds is None and name in self.pool_seconds:
            seconds, by = self.pool_seconds[name], "pool"
        return dataclasses.replace(self.loaded(key, folder, model, config, state, seconds),
                                   trained_by=by)

    def needs_training(self, key, seed):
        """Whether :meth:`model` would train ``(key, seed)`` now (no finished run of the same
        request here or in ``--runs``). For ``dense_matched`` this loads (or trains) the same
        seed's sparse model: its training codes fix the latent size."""
        name = self.folder_name(key, seed)
        kind, config, options, stopping = self._request(key, seed)
        request = self._request_record(name, kind, config, options, stopping)
        if self._reusable(name, request) is not None:
            return False
        folder = os.path.join(self.out, "models", name)
        return not (_finished(folder) and
                    same_request(_read_json(os.path.join(folder, REQUEST)), request))

    def _request_record(self, name, kind, config, options=None, stopping=None, model_class=None,
                        data=None):
        """What ``OUT/models/<name>/analysis_request.json`` records of a run: a finished run
        with the same record is reused. An ABP run's record holds the prior's schedule as
        built (``Schedule.to_dict``): a preset whose defaults changed since is another
        request."""
        train, monitor = data or (self.train, self.monitor)
        settings = {k: v for k, v in config.to_dict().items() if k != "device"}
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in (options or {}).items()}
        request = {"key": name.split("_seed")[0], "kind": kind, "config": settings,
                   "options": options,
                   "early_stopping": None if stopping is None else stopping.to_dict(),
                   "train_images": len(train), "monitor_images": len(monitor),
                   "mode": self.settings.mode}
        if kind == "abp":  # the schedule the preset gives today: a changed default retrains
            per_epoch = math.ceil(len(train) / config.optim.batch_size)
            request["schedule"] = config.build_schedule(per_epoch).to_dict()
        if model_class is not None:
            request["model_class"] = psg.checkpoint.class_path(model_class)
        return request

    def trained_folder(self, name, kind, config, options=None, stopping=None, *,
                       model_class=None, data=None):
        """``(folder, training seconds or None)`` of run ``name``: a finished one from
        ``--runs`` or from an earlier call with the same request, or trained now
        (``psg.train``, with ``model_class`` for a :class:`~pyro_sparsegen.SparseGenerator`
        subclass, or ``baselines.train_baseline``) on ``data`` (``(train, monitor)``; default
        the workspace's)."""
        options = options or {}
        train, monitor = data or (self.train, self.monitor)
        request = self._request_record(name, kind, config, options, stopping, model_class,
                                       (train, monitor))
        folder = self._reusable(name, request)
        if folder is not None:
            return folder, None
        folder = os.path.join(self.out, "models", name)
        seconds = None
        if not (_finished(folder) and
                same_request(_read_json(os.path.join(folder, REQUEST)), request)):
            seconds = self._train(name, kind, config, request["options"], stopping, folder,
                                  model_class, (train, monitor))
            self.write_json(os.path.join(folder, REQUEST), request)
        return folder, seconds

    def loaded(self, key, folder, model, config, state, seconds=None):
        """A :class:`Loaded` of a model just read by ``psg.load_run`` (checked against the
        data, in eval mode, with its encoder)."""
        if tuple(model.image_shape) != tuple(self.train.image_shape):
            raise AnalysisError(f"{folder}: trained on images {tuple(model.image_shape)}, the "
                                f"data has {tuple(self.train.image_shape)}")
        model.eval()
        return Loaded(key, config.seed, model, config, psg.make_inference(model, config), folder,
                      seconds, dict(state.extra))

    def _train(self, name, kind, config, options, stopping, folder, model_class=None,
               data=None):
        self.log(f"training {name} ({label(name.split('_seed')[0])}, "
                 f"d = {config.network.latent_dim}, {config.optim.epochs} epochs"
                 f"{'' if stopping is None else f' or more, up to {stopping.max_epochs}'}, "
                 f"seed {config.seed}) into {folder}")
        tick = time.perf_counter()
        main = name.split("_seed")[0] in MODEL_KEYS
        train, monitor = data or (self.train, self.monitor)
        shared = {"train_data": train, "test_data": monitor,
                  "progress": self.settings.progress, "figures": main and not self.settings.tiny}
        if kind == "abp":
            result = psg.train(config, folder, model_class=model_class, **shared)
        else:
            result = baselines.train_baseline(kind, config, folder, early_stopping=stopping,
                                              **shared, **options)
        if result.interrupted:
            raise KeyboardInterrupt
        seconds = time.perf_counter() - tick
        self.timings[f"train {name}"] = seconds
        self.log(f"trained {name} in {seconds:.0f} s")
        return seconds

    # -- cached evaluations (pyro_sparsegen.evaluation) --
    def cached(self, cache, compute, timing=None):
        """``compute()`` once per ``cache`` key; its seconds added to ``timings[timing]``."""
        if cache not in self._cache:
            tick = time.perf_counter()
            self._cache[cache] = compute()
            if timing:
                self.timings[timing] = self.timings.get(timing, 0.0) + \
                    time.perf_counter() - tick
        return self._cache[cache]

    def dataset_codes(self, model, encoder, data):
        """:func:`pyro_sparsegen.evaluation.dataset_codes` of ``data`` with the analysis's
        threshold, batch size, device and seed (not cached: :meth:`codes` caches a main
        model's)."""
        return ev.dataset_codes(model, encoder, data, threshold=self.threshold,
                                batch_size=EVAL_BATCH, device=self.device,
                                seed=self.settings.seed)

    def codes(self, key, seed, split):
        """:meth:`dataset_codes` of ``split`` ("train" / "test") for model ``key``, cached."""
        m = self.model(key, seed)
        return self.cached(("codes", key, seed, split), lambda: self.dataset_codes(
            m.model, m.encoder, self.train if split == "train" else self.test), "encode")

    def summary(self, key, seed):
        """Reconstruction against sparsity on the test codes."""
        return ev.sparsity_summary(self.codes(key, seed, "test"))

    def pixel_classifier(self):
        """The logistic regression on clean training pixels of denoise-then-classify."""
        self.needs_labels("denoise-then-classify")
        return self.cached(("pixel classifier",), lambda: ev.fit_pixel_classifier(
            self.train, seed=self.settings.seed), "fit pixel classifier")

    def example_rows(self, count=10):
        """Test positions shown in figures: the first image of each class (or the first)."""
        if self.test.labels is None:
            return np.arange(min(count, len(self.test)))
        return np.sort(np.unique(self.test.labels, return_index=True)[1])[:count]

    def censored_model(self, key, seed=0):
        """ABP model ``key`` with a censored Gaussian likelihood on [0, 1] (the labelled
        variant of the clipped protocol) and its encoder: a :class:`Loaded`."""
        def build():
            m = self.model(key, seed)
            model = ev.censored(m.model)
            return dataclasses.replace(m, model=model,
                                       encoder=psg.make_inference(model, m.config))
        return self.cached(("censored model", key, seed), build)

    def denoise(self, key, seed=0, *, clip=False, clean=False, censored=False):
        """:func:`pyro_sparsegen.evaluation.denoise` of the test images by model ``key``
        (``None``: the noisy images themselves, the floor) at every noise level, or at
        sigma 0 once with ``clean``: ``{sigma: DenoiseRun}``. ``censored``: clipped noise,
        inferred under the censored likelihood (ABP models)."""
        if censored:
            m, clip = self.censored_model(key, seed), True
        else:
            m = None if key is None else self.model(key, seed)
        labelled = self.train.labels is not None and self.test.labels is not None
        classifier = self.pixel_classifier() if labelled else None
        return self.cached(("denoise", key, seed, clip, clean, censored), lambda: ev.denoise(
            None if m is None else m.model, None if m is None else m.encoder, self.test,
            classifier=classifier, sigmas=(0.0,) if clean else NOISE_LEVELS,
            repeats=1 if clean else self.repeats, clip=clip, seed=self.settings.seed,
            batch_size=EVAL_BATCH, device=self.device, quality=not (clean or clip),
            example_rows=self.example_rows()), "denoise")

    @property
    def abp_keys(self):
        """The main models inferred by short-run Langevin (the censored variant applies)."""
        return tuple(k for k in MODEL_KEYS if k not in BASELINE_KINDS)

    def feature_extractor(self):
        """The FID's feature classifier, trained on the training images."""
        self.needs_labels("the FID's feature classifier")
        return self.cached(("features",), lambda: ev.fit_feature_classifier(
            self.train, epochs=self.mode["fid_epochs"], seed=self.settings.seed,
            device=self.device), "fit FID features")

    def sample_fid(self, key, seed=0):
        """FID of ``len(test)`` prior samples of model ``key`` against the test images; ABP
        models trained with sparsified codes decode sparsified samples."""
        m = self.model(key, seed)
        extractor = self.feature_extractor()
        return self.cached(("fid", key, seed), lambda: ev.sample_fid(
            m.model, extractor, self.test.images().numpy(), seed=self.settings.seed,
            sparsify=self.sparsified(key, m)), "FID")

    def sparsified(self, key, loaded):
        """Whether model ``key`` decodes sparsified codes (ABP trained with
        ``langevin.sparsify``), so that its prior samples are decoded the same way."""
        return key not in BASELINE_KINDS and loaded.config.langevin.sparsify

    # -- aggregating seeds --
    def over_seeds(self, key, value):
        """``(mean, sd over seeds or None for one seed, values)`` of ``value(key, seed)``."""
        values = [value(key, s) for s in self.seeds_of(key)]
        mean, sd = ev.mean_sd(values)
        return mean, (sd if len(values) > 1 else None), values

    def accuracy(self, key, sigma, **variant):
        """The :class:`~pyro_sparsegen.evaluation.Accuracy` of ``key`` at ``sigma``, the runs
        of every seed stacked (one run set for the floor, ``key=None``); ``variant``: the
        keywords of :meth:`denoise`."""
        seeds = [0] if key is None else self.seeds_of(key)
        return ev.Accuracy.stack([self.denoise(key, s, **variant)[sigma].accuracy
                                  for s in seeds])

    # -- output --
    def log(self, message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def figure_path(self, name):
        return os.path.join(self.out, "figures", name)

    def relative(self, path):
        return os.path.relpath(path, self.out)

    def write_text(self, name, text):
        """Write ``OUT/name`` atomically (:func:`pyro_sparsegen.files.write_text`); returns
        its path."""
        path = os.path.join(self.out, name)
        files.output_folder(os.path.dirname(path), error=AnalysisError)
        files.write_text(path, text)
        return path

    def write_json(self, name, data):
        return self.write_text(name, json.dumps(finite_or_none(data), indent=2,
                                                allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------------
# Training the main models side by side

# longest first; a seed's dense_matched waits for the same seed's sparse model (its training
# codes fix the latent size)
CORE_ORDER = ("sparse", "dense_abp", "dense_matched", "beta_vae", "vsc")


def core_keys(ws):
    """The models :func:`train_core_models` trains, in its order: the longer runs of
    ``--long-runs`` (longest first), :data:`CORE_ORDER`, and :data:`LEARNED_SCALE` after
    ``sparse`` with ``--learned-scale``."""
    long = tuple(key for _, key in sorted(ws.long_runs(), reverse=True) if key != "sparse") \
        if ws.settings.run_long_runs else ()
    return long + CORE_ORDER[:1] + ((LEARNED_SCALE,) if ws.settings.learned_scale else ()) + \
        CORE_ORDER[1:]


def train_core_models(ws):
    """Train every missing ``(key, seed)`` of the main models (:func:`core_keys` ×
    :attr:`Workspace.seeds`) before the scripts ask for them: ``ws.jobs`` processes side by
    side (a "spawn" :class:`concurrent.futures.ProcessPoolExecutor`), each with one torch
    thread on CPU and its own :class:`Workspace` on the same ``OUT``, training exactly what
    ``ws.model(key, seed)`` would into the same folder, so that the scripts then load the
    finished runs; with one job, the same models in this process in the same order. Jobs run
    longest first (:func:`core_keys`). Returns the run names trained. A failed job raises
    :class:`AnalysisError` naming the model (after the jobs in flight end)."""
    order = core_keys(ws)
    jobs = [(key, seed) for key in order for seed in ws.seeds]
    if ws.jobs == 1:
        trained = []
        for key, seed in jobs:
            if ws.model(key, seed).trained_seconds is not None:
                trained.append(ws.folder_name(key, seed))
        return trained
    tick = time.perf_counter()
    # dense_matched is decided once its sparse model is finished: its request needs the codes
    waiting = [job for job in jobs if job[0] == "dense_matched"]
    ready = [job for job in jobs if job[0] != "dense_matched" and ws.needs_training(*job)]
    running, trained = {}, []
    settings = dataclasses.replace(ws.settings, progress=False)  # no bars from two processes
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(ws.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            while ready or running or waiting:
                _submit(ws, pool, settings, ready, running)
                for job in [j for j in waiting if ("sparse", j[1]) not in
                            ready + list(running.values())]:
                    waiting.remove(job)
                    if ws.needs_training(*job):  # encodes the sparse training codes here
                        ready.append(job)
                        ready.sort(key=lambda j: (order.index(j[0]), j[1]))
                _submit(ws, pool, settings, ready, running)
                if not running:
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    key, seed = running.pop(future)
                    name = ws.folder_name(key, seed)
                    try:
                        outcome = future.result()
                    except cf.process.BrokenProcessPool:
                        outcome = {"error": "its training process ended unexpectedly "
                                            "(killed, or out of memory?)", "user": True}
                    _collect(ws, name, outcome)
                    trained.append(name)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    ws.timings[f"train main models ({ws.jobs} processes)"] = time.perf_counter() - tick
    return trained


def _submit(ws, pool, settings, ready, running):
    """Start ready jobs while a process is free; a dense_matched job carries its latent size
    (the parent's, from the sparse model's training codes)."""
    while ready and len(running) < ws.jobs:
        key, seed = ready.pop(0)
        matched = ws.matched_latent_dim(seed) if key == "dense_matched" else None
        running[pool.submit(train_job, settings, key, seed, matched)] = (key, seed)


def _collect(ws, name, outcome):
    """Record a finished job's seconds, or raise its error as one line naming the model."""
    if outcome.get("interrupted"):
        raise KeyboardInterrupt
    if "error" in outcome:
        if not outcome.get("user"):
            ws.log(f"training {name} failed in its process:\n{outcome.get('traceback', '')}")
        raise AnalysisError(f"training {name} ({label(name.split('_seed')[0])}) failed: "
                            f"{outcome['error']}")
    ws.pool_seconds[name] = outcome["seconds"]
    ws.timings[f"train {name}"] = outcome["seconds"]


_WORKER = {}  # a training process's Workspace, built once (the data loaded once)


def train_job(settings, key, seed, matched=None):
    """One job of :func:`train_core_models`, in its own process: ``Workspace(settings)
    .model(key, seed)`` (``matched``: dense_matched's latent size, as the parent computed it),
    one torch thread on CPU. Returns ``{"seconds"}`` (``None`` when nothing was trained),
    ``{"interrupted": True}`` or ``{"error": one line, "user": bool, "traceback"}``."""
    import traceback

    try:
        ws = _WORKER.get("ws")
        if ws is None or ws.settings != settings:
            ws = _WORKER["ws"] = Workspace(settings)
        ws._cache.clear()  # nothing of the previous job (its model) is kept
        ws.timings.clear()
        if matched is not None:
            ws._cache[("matched", seed)] = matched
        with cpu_threads(settings, ws.device):
            ws.model(key, seed)
        return {"seconds": ws.timings.get(f"train {ws.folder_name(key, seed)}")}
    except KeyboardInterrupt:
        return {"interrupted": True}
    except Exception as e:  # noqa: BLE001 - handed to the parent as one line
        return {"error": first_line(e), "traceback": traceback.format_exc(),
                "user": isinstance(e, USER_ERRORS) or is_user_error(e)}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def same_request(recorded, request):
    """Whether a run's recorded analyses request (``analysis_request.json``, possibly written
    by an earlier version) asks for what ``request`` asks: its config is read through today's
    :class:`pyro_sparsegen.TrainConfig` (a setting it predates has its default, as when a
    checkpoint's config is loaded); no record or an unreadable one is a different request."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        return False
    try:
        config = psg.TrainConfig.from_dict(recorded["config"]).to_dict()
    except (psg.ConfigError, TypeError, ValueError):
        return False
    config.pop("device", None)
    return {**recorded, "config": config} == request


def _finished(folder):
    """True when ``folder`` holds a checkpoint of a run that completed all its epochs (for an
    early-stopped baseline the checkpoint records the epochs it had)."""
    path = os.path.join(folder, "checkpoint.h5")
    if not os.path.isfile(path):
        return False
    try:
        state = psg.checkpoint.load(path)
        epochs = psg.TrainConfig.from_dict(state.config).optim.epochs
    except (psg.CheckpointError, psg.ConfigError, TypeError):
        return False
    progress = state.progress or {}
    return progress.get("epoch", 0) >= epochs and not progress.get("batch_in_epoch", 0)
