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
  own recommended training (:func:`pyro_sparsegen.baselines.recommended`).

Seeds: the full mode trains the five main models with 3 seeds (``OUT/models/<key>`` for the
first, ``<key>_seed<k>`` for the others) and reports mean ± sd; ``--quick`` uses one seed.
The sweep and frontier models have one seed in every mode.
"""

import argparse
import contextlib
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
from pyro_sparsegen import evaluation as ev  # noqa: E402
from pyro_sparsegen.diagnostics import format_number, markdown_table  # noqa: E402
from pyro_sparsegen.distributions import ACTIVE_THRESHOLD  # noqa: E402, F401 (the scripts')
from pyro_sparsegen.errors import (  # noqa: E402
    SparsegenError, first_line, is_user_error, report_bug)
from pyro_sparsegen.runtime import resolve_device  # noqa: E402

MODEL_KEYS = ("sparse", "dense_abp", "dense_matched", "beta_vae", "vsc")
BASELINE_KINDS = ("beta_vae", "vsc")
NOISE_LEVELS = ev.NOISE_LEVELS
REQUEST = "analysis_request.json"  # what a model folder was trained for (written when done)
EVAL_BATCH = 500  # images per encoder call in evaluation (chains are per image: any size works)
# held-out images a training run evaluates after each epoch (its metrics.csv and collapse
# watch; the analyses themselves use every test image): fewer in the quick mode
MONITOR_IMAGES = {"full": 500, "quick": 250, "tiny": 500}

# Mode settings. --quick: 10 epochs, one seed, every test image (1,000 of mnist5k); the
# baselines train until their validation ELBO stops improving (10..60 epochs). About 20
# minutes on an idle 2-core machine: 11 ABP models of ~45 s (3 main, 2 sweep, 4 frontier
# beyond the main ones), 2 baselines of about a minute, 7 variant-prior models (~45 s; the
# hierarchical ones ~110 s), 5 small transfer models (~80 s in all), the evaluation ~4 min
# (denoising: 3 variants x 3 noise levels x 5 repeats of 1,000 images per model). --tiny
# (hidden, for the tests): a few hundred digits, a small network, two seeds, a short evidence
# run. "evidence": (warm-up, draws, thin) of variant_priors' replica-exchange run.
MODES = {
    "full": {"epochs": None, "seeds": 3, "test_images": None, "repeats": ev.REPEATS,
             "baseline_max_epochs": 200, "sweep": (0.2, 0.1, 0.05, 0.01),
             "frontier": (4, 8, 12, 20, 50, 100), "fid_epochs": 10, "evidence": (400, 100, 2)},
    "quick": {"epochs": 10, "seeds": 1, "test_images": None, "repeats": ev.REPEATS,
              "baseline_max_epochs": 60, "sweep": (0.1, 0.01),
              "frontier": (4, 8, 12, 20, 50, 100), "fid_epochs": 10, "evidence": (400, 100, 2)},
    "tiny": {"epochs": 3, "seeds": 2, "test_images": 100, "repeats": 2,
             "baseline_max_epochs": 5, "sweep": (0.1,), "frontier": (2, 4, 6), "fid_epochs": 3,
             "train_images": 200, "latent_dim": 6, "hidden": (32,), "batch_size": 25,
             "noise_scale": 0.1, "evidence": (60, 30, 1)},
}
PROBE_LABELS = ev.LABEL_COUNTS


class AnalysisError(SparsegenError):
    """A problem the user can fix (printed as one line, no traceback)."""


def label(key):
    """Human-readable name of a model key."""
    names = {"sparse": "sparse (annealed spike-and-slab ABP)", "dense_abp": "dense ABP",
             "dense_matched": "dense ABP, matched budget", "beta_vae": "β-VAE", "vsc": "VSC",
             None: "noisy input, no model (floor)", "noisy_input": "noisy input (floor)"}
    if key is not None and key.startswith("sparse_w"):
        return f"sparse, final w = {key[len('sparse_w'):]}"
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

    @property
    def mode(self):
        return "tiny" if self.tiny else "quick" if self.quick else "full"

    @property
    def options(self):
        """The mode's settings (:data:`MODES`)."""
        return MODES[self.mode]


def parser(prog, description):
    """The scripts' shared arguments: a :class:`pyro_sparsegen.cli.ArgumentParser` (a bad
    command line raises :class:`~pyro_sparsegen.cli.UsageError`, one line)."""
    p = cli.ArgumentParser(prog=prog, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist5k",
                   help="data spec (mnist5k, digits, idx:DIR, npz:PATH, ...; default mnist5k)")
    p.add_argument("--out", required=True, help="output folder (models go to OUT/models/)")
    p.add_argument("--quick", action="store_true",
                   help=f"{MODES['quick']['epochs']} epochs per model, one seed")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds of the main models (default 3; 1 with --quick)")
    p.add_argument("--runs", metavar="DIR",
                   help="reuse the finished models in DIR/models/<key>/ (or DIR/<key>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=int, default=0,
                   help="first training seed and the seed of subsets and noise (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default 1 on CPU: the small matrix "
                        "products gain little from more and lose much on shared cores)")
    p.add_argument("--beta", type=float, default=1.0, help="the β-VAE's β (default 1)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_settings(prog, description, argv=None):
    """The :class:`Settings` of a command line; a bad one: one line on stderr, exit status 2."""
    try:
        args = parser(prog, description).parse_args(argv)
    except cli.UsageError as e:
        _fail_args(prog, first_line(e))
    if args.seed < 0:
        _fail_args(prog, "--seed must be non-negative")
    if args.seeds is not None and args.seeds < 1:
        _fail_args(prog, "--seeds must be positive")
    if args.threads is not None and args.threads < 1:
        _fail_args(prog, "--threads must be positive")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        _fail_args(prog, "--beta must be a non-negative number")
    if args.runs is not None and not os.path.isdir(args.runs):
        _fail_args(prog, f"--runs {args.runs}: no such folder")
    return Settings(data=args.data, out=args.out, quick=args.quick, tiny=args.tiny,
                    runs=args.runs, device=args.device, seed=args.seed, seeds=args.seeds,
                    threads=args.threads, beta=args.beta, progress=sys.stderr.isatty())


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


def main(script, run, description, argv=None, *, save=True):
    """A script's ``main``: parse, build the workspace, ``run``, write ``OUT/<script>.md`` and
    ``.json`` (with ``save``), print the tables. Returns the exit status; user errors are one
    line on stderr."""
    prog = os.path.basename(script)
    name = os.path.splitext(prog)[0]
    settings = parse_settings(prog, description, argv)
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
    """Merge ``{key: {field: value}}`` dicts one level deep."""
    for key, value in results.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
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
        return self.seeds if key in MODEL_KEYS else [0]

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
        """The package's default config, shortened by the mode, with training seed
        ``--seed + seed``."""
        config = psg.TrainConfig()
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

    def frontier(self):
        """``[(latent size, key)]`` of the dense models on the sparsity frontier: the mode's
        sizes, the main dense model's and the matched one's (sharing their runs)."""
        own = self.base_config().network.latent_dim
        matched = self.matched_latent_dim()
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

    def matched_latent_dim(self):
        """round(mean number of active coordinates of the sparse model's *training* codes),
        at least 1 (the first seed's model)."""
        cache = ("matched",)
        if cache not in self._cache:
            active = ev.sparsity_summary(self.codes("sparse", 0, "train"))["mean_active"]
            self._cache[cache] = max(1, int(round(active)))
        return self._cache[cache]

    def _request(self, key, seed):
        """``(kind, config, options, early stopping)``: how model ``key`` is trained."""
        config = self.base_config(seed)
        if key == "sparse":
            return "abp", config, {}, None
        if key.startswith("sparse_w"):
            config.prior.final_slab_weight = float(key[len("sparse_w"):])
            return "abp", config.validate(), {}, None
        if key == "dense_abp":
            return "abp", baselines.dense_config(config), {}, None
        if key == "dense_matched":
            return "abp", baselines.dense_config(config, self.matched_latent_dim()), {}, None
        if key.startswith("dense_d"):
            return "abp", baselines.dense_config(config, int(key[len("dense_d"):])), {}, None
        if key in BASELINE_KINDS:
            config, stopping, options = self.baseline_request(key, seed)
            return key, config, options, stopping
        raise AnalysisError(f"unknown model key {key!r}")

    def folder_name(self, key, seed):
        return key if seed == 0 else f"{key}_seed{seed}"

    def _reusable(self, name):
        """A finished run ``name`` from ``--runs``, if any."""
        if self.settings.runs is None:
            return None
        for folder in (os.path.join(self.settings.runs, "models", name),
                       os.path.join(self.settings.runs, name)):
            if _finished(folder):
                return folder
        return None

    def _load_or_train(self, key, seed):
        name = self.folder_name(key, seed)
        kind, config, options, stopping = self._request(key, seed)
        folder, seconds = self.trained_folder(name, kind, config, options, stopping)
        model, config, state = psg.load_run(folder, device=self.device)
        return self.loaded(key, folder, model, config, state, seconds)

    def trained_folder(self, name, kind, config, options=None, stopping=None, *,
                       model_class=None, data=None):
        """``(folder, training seconds or None)`` of run ``name``: a finished one from
        ``--runs`` or from an earlier call with the same request, or trained now
        (``psg.train``, with ``model_class`` for a :class:`~pyro_sparsegen.SparseGenerator`
        subclass, or ``baselines.train_baseline``) on ``data`` (``(train, monitor)``; default
        the workspace's)."""
        options = options or {}
        train, monitor = data or (self.train, self.monitor)
        folder = self._reusable(name)
        if folder is not None:
            return folder, None
        folder = os.path.join(self.out, "models", name)
        settings = {k: v for k, v in config.to_dict().items() if k != "device"}
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        request = {"key": name.split("_seed")[0], "kind": kind, "config": settings,
                   "options": options,
                   "early_stopping": None if stopping is None else stopping.to_dict(),
                   "train_images": len(train), "monitor_images": len(monitor),
                   "mode": self.settings.mode}
        if model_class is not None:
            request["model_class"] = psg.checkpoint.class_path(model_class)
        seconds = None
        if not (_finished(folder) and _read_json(os.path.join(folder, REQUEST)) == request):
            seconds = self._train(name, kind, config, options, stopping, folder, model_class,
                                  (train, monitor))
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


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
