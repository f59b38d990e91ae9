"""Shared plumbing of the scripts in ``analyses/``: arguments, data, the five models (trained
once into ``OUT/models/<key>/`` and reused by every script), codes, denoising runs, tables.

Every script has ``run(ws) -> Section`` (compute, write its figures, return its Markdown and
numbers) and ``main(argv=None)`` (parse the arguments, build a :class:`Workspace`, call
``run``, write ``OUT/<script>.md``). ``run_all.py`` builds one workspace and calls every
``run`` on it, so models, codes and denoised reconstructions are computed once.

Model keys:

- ``sparse``: the package's default :class:`~pyro_sparsegen.TrainConfig` (annealed
  spike-and-slab prior), trained by :func:`pyro_sparsegen.train`;
- ``sparse_w<W>``: the same with ``prior.final_slab_weight = W`` (reconstruction sweep);
- ``dense_abp``: classic ABP (constant N(0, 1) prior), same latent size;
- ``dense_matched``: classic ABP with latent size = the sparse model's mean number of active
  coordinates on the test set (``|z| > threshold``), at least 1;
- ``beta_vae``, ``vsc``: :func:`pyro_sparsegen.baselines.train_baseline`.

Only the public API of ``pyro_sparsegen`` is used.
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

MODEL_KEYS = ("sparse", "dense_abp", "dense_matched", "beta_vae", "vsc")
BASELINE_KINDS = ("beta_vae", "vsc")
# The baselines' settings: VSC's prior sparsity as in Tonolini et al.; the beta-VAE's beta is
# --beta (default 1: larger values trade reconstruction for disentanglement, and the
# comparison must not weaken a baseline).
BASELINE_OPTIONS = {"beta_vae": {"beta": 1.0}, "vsc": {"alpha": 0.01}}
NOISE_LEVELS = (0.3, 0.5, 0.7)
SWEEP_WEIGHTS = (0.5, 0.1, 0.01, 0.001)
QUICK_SWEEP_CANDIDATES = (0.01, 0.001, 0.1)  # quick: the default plus the first that differs
PROBE_LABELS = (100, 1000)  # plus "all"
REQUEST = "analysis_request.json"  # what a model folder was trained for (written when done)

# --quick: few epochs, a stratified 500-image test subset. --tiny (hidden, for the tests):
# a few hundred images, a small network, three short epochs.
QUICK = {"epochs": 10, "test_images": 500}
TINY = {"train_images": 200, "test_images": 100, "latent_dim": 6, "hidden": (32,),
        "epochs": 3, "batch_size": 25, "lr": 0.01, "repeats": 2}


class AnalysisError(Exception):
    """A problem the user can fix (printed as one line, no traceback)."""


def label(key):
    """Human-readable name of a model key."""
    names = {"sparse": "sparse (annealed spike-and-slab ABP)", "dense_abp": "dense ABP",
             "dense_matched": "dense ABP, matched budget", "beta_vae": "β-VAE", "vsc": "VSC"}
    if key.startswith("sparse_w"):
        return f"sparse, final w = {key[len('sparse_w'):]}"
    return names.get(key, key)


# ------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclasses.dataclass
class Settings:
    data: str = "mnist5k"
    out: str = "analysis"
    quick: bool = False
    tiny: bool = False
    runs: str = None
    device: str = "auto"
    seed: int = 0
    threads: int = None
    beta: float = BASELINE_OPTIONS["beta_vae"]["beta"]
    progress: bool = False

    @property
    def mode(self):
        return "tiny" if self.tiny else "quick" if self.quick else "full"


def parser(prog, description):
    p = _Parser(prog=prog, description=description,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist5k",
                   help="data spec (mnist5k, digits, idx:DIR, npz:PATH, ...; default mnist5k)")
    p.add_argument("--out", required=True, help="output folder (models go to OUT/models/)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['epochs']} epochs per model, {QUICK['test_images']} test images")
    p.add_argument("--runs", metavar="DIR",
                   help="reuse the finished models in DIR/models/<key>/ (or DIR/<key>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets and noise (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default 1 on CPU: the small matrix "
                        "products gain little from more and lose much on shared cores)")
    p.add_argument("--beta", type=float, default=BASELINE_OPTIONS["beta_vae"]["beta"],
                   help="the β-VAE's β (default %(default)s)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_settings(prog, description, argv=None):
    args = parser(prog, description).parse_args(argv)
    if args.seed < 0:
        _fail_args(prog, "--seed must be non-negative")
    if args.threads is not None and args.threads < 1:
        _fail_args(prog, "--threads must be positive")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        _fail_args(prog, "--beta must be a non-negative number")
    if args.runs is not None and not os.path.isdir(args.runs):
        _fail_args(prog, f"--runs {args.runs}: no such folder")
    return Settings(data=args.data, out=args.out, quick=args.quick, tiny=args.tiny,
                    runs=args.runs, device=args.device, seed=args.seed, threads=args.threads,
                    beta=args.beta, progress=sys.stderr.isatty())


def _fail_args(prog, message):
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise AnalysisError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AnalysisError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


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
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    print(section.markdown(level=1))
    return 0


def _one_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


USER_ERRORS = (AnalysisError, psg.DataError, psg.ConfigError, psg.CheckpointError,
               psg.TrainingError, OSError)


# ------------------------------------------------------------------------------------------
# Results


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


def fmt(value, digits=3):
    """A number as table text; ``None`` / NaN (not defined for this model) as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def fmt_mean_sd(values, scale=1.0, digits=1):
    values = np.asarray(values, dtype=float) * scale
    sd = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def md_table(header, rows):
    """A Markdown table; a ``|`` inside a cell (``|z|``) is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def finite_or_none(value):
    """JSON-safe number: NaN and inf become ``None``."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
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


# ------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot state, nothing shown)


def figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    fig.clear()
    return path


# ------------------------------------------------------------------------------------------
# Data


def stratified_subset(labels, n, seed):
    """Sorted positions of a stratified random subset of ``n`` of ``labels`` (all when
    ``n >= len(labels)``)."""
    total = len(labels)
    if n >= total:
        return np.arange(total)
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(np.arange(total), train_size=n, random_state=seed,
                               stratify=labels if labels is not None else None)
    return np.sort(rows)


@dataclasses.dataclass
class Loaded:
    key: str
    model: object
    config: object
    encoder: object
    folder: str
    trained_seconds: float  # None when reused


class Workspace:
    """Data, models, codes and denoising runs of one analysis, each computed once.

    :ivar train: training split (:class:`~pyro_sparsegen.ImageData`).
    :ivar test: test split (a stratified subset with ``--quick``).
    """

    def __init__(self, settings):
        self.settings = settings
        self.out = os.path.abspath(settings.out)
        self.device = resolve_device(settings.device)
        os.makedirs(self.out, exist_ok=True)
        if not os.access(self.out, os.W_OK):
            raise AnalysisError(f"{self.out}: output folder is not writable")
        train = psg.load_data(settings.data, "train")
        test = psg.load_data(settings.data, "test")
        if settings.tiny:
            train = train.subset(stratified_subset(train.labels, TINY["train_images"],
                                                   settings.seed))
        test_images = TINY["test_images"] if settings.tiny else \
            QUICK["test_images"] if settings.quick else None
        if test_images is not None:
            test = test.subset(stratified_subset(test.labels, test_images, settings.seed))
        self.train, self.test = train, test
        self._models, self._codes, self._evaluations, self._denoise = {}, {}, {}, {}
        self._pixel_classifier = None
        self.timings = {}

    # -- settings derived from the mode --
    @property
    def repeats(self):
        return TINY["repeats"] if self.settings.tiny else 5

    @property
    def threshold(self):
        return self.base_config().threshold

    def needs_labels(self, what):
        if self.train.labels is None or self.test.labels is None:
            raise AnalysisError(f"{what} needs labelled data; {self.settings.data} has no labels")

    def probe_label_counts(self):
        """Label counts for the linear probe: 100, 1,000 (those below the training set's size)
        and ``"all"``."""
        return [str(n) for n in PROBE_LABELS if n < len(self.train)] + ["all"]

    def base_config(self):
        """The package's default config, shortened by ``--quick`` / ``--tiny``."""
        config = psg.TrainConfig()
        config.data.spec = self.settings.data
        config.device = str(self.device)
        config.seed = self.settings.seed
        if self.settings.quick:
            config.optim.epochs = QUICK["epochs"]
        if self.settings.tiny:
            config.network.latent_dim = TINY["latent_dim"]
            config.network.hidden = TINY["hidden"]
            config.optim.epochs = TINY["epochs"]
            config.optim.batch_size = TINY["batch_size"]
            config.optim.lr = TINY["lr"]
        return config.validate()

    def default_final_slab_weight(self):
        """The slab weight the default schedule ends at (read from the config, not assumed)."""
        config = self.base_config()
        per_epoch = math.ceil(len(self.train) / config.optim.batch_size)
        schedule = config.build_schedule(per_epoch)
        return float(schedule(per_epoch * config.optim.epochs).slab_weight)

    def sweep_weights(self):
        """Final slab weights of the reconstruction sweep, each with its model key."""
        default = self.default_final_slab_weight()
        same = (lambda w: math.isclose(w, default, rel_tol=1e-9, abs_tol=1e-12))
        if self.settings.quick or self.settings.tiny:
            other = next(w for w in QUICK_SWEEP_CANDIDATES if not same(w))
            weights = sorted({default, other}, reverse=True)
        else:
            weights = list(SWEEP_WEIGHTS) + ([] if any(map(same, SWEEP_WEIGHTS)) else [default])
            weights = sorted(weights, reverse=True)
        return [(w, "sparse" if same(w) else f"sparse_w{w:g}") for w in weights]

    def baseline_options(self, key):
        """The options :func:`~pyro_sparsegen.baselines.train_baseline` gets for ``key``."""
        options = dict(BASELINE_OPTIONS.get(key, {}))
        if key == "beta_vae":
            options["beta"] = self.settings.beta
        return options

    # -- models --
    def model(self, key):
        """The trained model ``key`` (trained now unless a finished one exists)."""
        if key not in self._models:
            self._models[key] = self._load_or_train(key)
        return self._models[key]

    def loaded_models(self):
        """The models loaded (or trained) so far: ``{key: Loaded}``, in order."""
        return dict(self._models)

    def matched_latent_dim(self):
        """round(mean number of active coordinates of the sparse model's test codes), >= 1."""
        ev = self.evaluation("sparse")
        d = self.model("sparse").config.network.latent_dim
        return max(1, int(round((1.0 - ev["inactive_fraction_threshold"]) * d)))

    def _request(self, key):
        """``(kind, config, options)``: how model ``key`` is trained."""
        config = self.base_config()
        if key == "sparse":
            return "abp", config, {}
        if key.startswith("sparse_w"):
            config.prior.final_slab_weight = float(key[len("sparse_w"):])
            return "abp", config.validate(), {}
        if key in ("dense_abp", "dense_matched") or key in BASELINE_KINDS:
            baselines = _baselines()
            if key == "dense_abp":
                return "abp", baselines.dense_config(config), {}
            if key == "dense_matched":
                return "abp", baselines.dense_config(config, self.matched_latent_dim()), {}
            return key, config, self.baseline_options(key)
        raise AnalysisError(f"unknown model key {key!r}")

    def _reusable(self, key):
        """A finished run of ``key`` from ``--runs``, if any."""
        if self.settings.runs is None:
            return None
        for folder in (os.path.join(self.settings.runs, "models", key),
                       os.path.join(self.settings.runs, key)):
            if _finished(folder):
                return folder
        return None

    def _load_or_train(self, key):
        folder = self._reusable(key)
        seconds = None
        if folder is None:
            kind, config, options = self._request(key)
            folder = os.path.join(self.out, "models", key)
            settings = {k: v for k, v in config.to_dict().items() if k != "device"}
            request = {"key": key, "kind": kind, "config": settings, "options": options,
                       "train_images": len(self.train), "test_images": len(self.test),
                       "mode": self.settings.mode}
            if not (_finished(folder) and _read_json(os.path.join(folder, REQUEST)) == request):
                seconds = self._train(key, kind, config, options, folder)
                self.write_json(os.path.join(folder, REQUEST), request)
        if key in BASELINE_KINDS:
            _baselines()  # the checkpoint names a class of that module
        model, config, _ = psg.load_run(folder, device=self.device)
        if tuple(model.image_shape) != tuple(self.train.image_shape):
            raise AnalysisError(f"{folder}: trained on images {tuple(model.image_shape)}, the "
                                f"data has {tuple(self.train.image_shape)}")
        model.eval()
        encoder = psg.make_encoder(model, config)
        return Loaded(key, model, config, encoder, folder, seconds)

    def _train(self, key, kind, config, options, folder):
        figures = not self.settings.tiny
        self.log(f"training {key} ({label(key)}, d = {config.network.latent_dim}, "
                 f"{config.optim.epochs} epochs) into {folder}")
        tick = time.perf_counter()
        shared = {"train_data": self.train, "test_data": self.test,
                  "progress": self.settings.progress, "figures": figures}
        if kind == "abp":
            result = psg.train(config, folder, **shared)
        else:
            result = _baselines().train_baseline(kind, config, folder, **shared, **options)
        if result.interrupted:
            raise KeyboardInterrupt
        seconds = time.perf_counter() - tick
        self.timings[f"train {key}"] = seconds
        self.log(f"trained {key} in {seconds:.0f} s")
        return seconds

    # -- codes and reconstructions --
    def evaluation(self, key):
        """:func:`pyro_sparsegen.evaluate` on the test split (cached)."""
        if key not in self._evaluations:
            m = self.model(key)
            torch.manual_seed(self.settings.seed)
            self._evaluations[key] = psg.evaluate(
                m.model, self.test, m.encoder, threshold=self.threshold,
                batch_size=m.config.optim.batch_size, device=self.device)
        return self._evaluations[key]

    def codes(self, key, split):
        """:func:`pyro_sparsegen.encode_dataset` of ``split`` ("train" / "test"), cached."""
        if (key, split) not in self._codes:
            m = self.model(key)
            data = self.train if split == "train" else self.test
            torch.manual_seed(self.settings.seed)
            tick = time.perf_counter()
            self._codes[key, split] = psg.encode_dataset(
                m.model, data, m.encoder, threshold=self.threshold,
                batch_size=m.config.optim.batch_size, device=self.device)
            self.timings[f"encode {key} {split}"] = time.perf_counter() - tick
        return self._codes[key, split]

    def noisy_test_images(self, sigma, repeat):
        """Clean and noisy test images ``[N, C, H, W]`` (numpy float32), the noise seeded by
        (seed, repeat, sigma) so that every model sees the same noisy images."""
        clean = self.test.images().numpy()
        if sigma == 0:
            return clean, clean
        rng = np.random.default_rng([self.settings.seed, repeat, int(round(sigma * 1000))])
        noisy = np.clip(clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32),
                        0.0, 1.0).astype(np.float32)
        return clean, noisy

    def reconstruct(self, key, images):
        """``network(encoder(images))`` in batches: numpy ``[N, C, H, W]``."""
        m = self.model(key)
        out = []
        batch = m.config.optim.batch_size
        for start in range(0, images.shape[0], batch):
            x = torch.from_numpy(images[start:start + batch]).to(self.device)
            z = m.encoder(x)
            with torch.no_grad():
                out.append(m.model.network(z).detach().cpu().numpy())
        return np.concatenate(out).reshape(images.shape)

    def pixel_classifier(self):
        """A linear classifier (logistic regression) on clean training pixels (cached)."""
        if self._pixel_classifier is None:
            self.needs_labels("denoise-then-classify")
            tick = time.perf_counter()
            x = self.train.images().numpy().reshape(len(self.train), -1)
            self._pixel_classifier = fit_logistic(x, self.train.labels, scale=False)
            self.timings["fit pixel classifier"] = time.perf_counter() - tick
        return self._pixel_classifier

    def example_rows(self, count=10):
        """Test positions shown in figures: the first image of each class (or the first)."""
        if self.test.labels is None:
            return np.arange(min(count, len(self.test)))
        return np.sort(np.unique(self.test.labels, return_index=True)[1])[:count]

    def denoise(self, key, sigma, repeat):
        """Denoising of the test images at noise ``sigma`` (repeat ``repeat``) by model ``key``
        (``None``: the noisy images themselves). Cached dict: ``accuracy`` of the pixel
        classifier (``None`` without labels), mean ``psnr`` and ``ssim`` against the clean
        images, and ``examples`` (clean, noisy, output) of :meth:`example_rows`."""
        cache = (key, float(sigma), repeat)
        if cache not in self._denoise:
            clean, noisy = self.noisy_test_images(sigma, repeat)
            torch.manual_seed(self.settings.seed + repeat)
            tick = time.perf_counter()
            output = noisy if key is None else np.clip(self.reconstruct(key, noisy), 0, 1)
            self.timings["denoise"] = self.timings.get("denoise", 0.0) + \
                time.perf_counter() - tick
            accuracy = None
            if self.test.labels is not None and self.train.labels is not None:
                predicted = self.pixel_classifier().predict(output.reshape(len(output), -1))
                accuracy = float((predicted == self.test.labels).mean())
            psnr, ssim = image_quality(clean, output)
            shown = self.example_rows()
            self._denoise[cache] = {"accuracy": accuracy, "psnr": psnr, "ssim": ssim,
                                    "examples": (clean[shown], noisy[shown], output[shown])}
        return self._denoise[cache]

    # -- output --
    def log(self, message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def figure_path(self, name):
        return os.path.join(self.out, "figures", name)

    def relative(self, path):
        return os.path.relpath(path, self.out)

    def write_text(self, name, text):
        path = os.path.join(self.out, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def write_json(self, name, data):
        return self.write_text(name, json.dumps(finite_or_none(data), indent=2,
                                                allow_nan=False) + "\n")


def _baselines():
    try:
        from pyro_sparsegen import baselines
    except ImportError as e:
        raise AnalysisError(f"the baselines need pyro_sparsegen.baselines ({e})") from None
    return baselines


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _finished(folder):
    """True when ``folder`` holds a checkpoint of a run that completed all its epochs."""
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


# ------------------------------------------------------------------------------------------
# Metrics


def fit_logistic(x, y, *, scale=True, seed=0):
    """A multinomial logistic regression (standardised features when ``scale``); lbfgs gets
    enough iterations, and a remaining ConvergenceWarning (a probe that has not fully
    converged still classifies) is kept out of the caller's warning filters."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(max_iter=1000, random_state=seed)
    model = make_pipeline(StandardScaler(), classifier) if scale else classifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def image_quality(clean, output):
    """Mean PSNR and SSIM (scikit-image, data_range 1) of ``output`` against ``clean``, both
    ``[N, C, H, W]`` in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for a, b in zip(clean, output):
        with np.errstate(divide="ignore"):  # identical images: inf dB, capped below
            psnr.append(peak_signal_noise_ratio(a, b, data_range=1.0))
        if a.shape[0] == 1:
            ssim.append(structural_similarity(a[0], b[0], data_range=1.0))
        else:
            ssim.append(structural_similarity(a, b, data_range=1.0, channel_axis=0))
    psnr = np.asarray(psnr, dtype=float)
    # identical images give inf PSNR; cap at 100 dB so means stay finite
    return float(np.minimum(psnr, 100.0).mean()), float(np.mean(ssim))
