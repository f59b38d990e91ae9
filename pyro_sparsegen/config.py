"""Typed configuration of a training run, one dataclass per concern.

The whole :class:`TrainConfig` is saved into every checkpoint (``to_dict``) and can be read
from a JSON or TOML file (``from_file``); unknown keys are errors.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import tomllib
from typing import Optional

from . import schedules
from .errors import SparsegenError
from .distributions import ACTIVE_THRESHOLD

NETWORKS = ("mlp", "conv")
PRESETS = ("default", "v1", "dense", "authors", "spike", "constant")
#: Named recipes (``TrainConfig.recipe``): the settings that differ from today's defaults.
RECIPES = {
    "default": {},
    # the first release's recipe (tuned on 28 x 28 MNIST for 20 epochs): slab weight 1 -> 0.5,
    # no constraint on the generator's scale, sigma 0.3 whatever the image size
    "v1": {("prior", "preset"): "v1", ("network", "input_norm"): None,
           ("network", "noise_scale"): 0.3},
}
SHAPED_PRESETS = ("default", "v1")  # those prior.dense_fraction and prior.slab_scale shape
# their dense share of the run before the annealing: 0.3 since issue 22's recipe search (0.1
# before: the same figures but the FID, 22.8 against 33.5 on three seeds; docs/experiments.md);
# the first release's v1 keeps its 0.1
DENSE_FRACTION = {"default": 0.3, "v1": 0.1}
# the annealing of the default / v1 presets takes half of the run: at most half stays dense
MAX_DENSE_FRACTION = 0.5
PRIOR_KINDS = ("annealed", "learned", "learned-scale", "hierarchical")  # SparseGenerator's
MODEL_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


DTYPES = ("float32", "float64")  # TrainConfig.dtype's values


def resolved_dtype(name):
    """``name`` (``"float32"``, ``"float64"``), or for ``None`` torch's default dtype's name."""
    if name is not None:
        return name
    import torch

    return str(torch.get_default_dtype()).removeprefix("torch.")


@contextlib.contextmanager
def default_dtype(name):
    """torch's default floating dtype set to ``name`` (``"float32"`` or ``"float64"``, a
    run's ``TrainConfig.dtype``; ``None``: left as it is) for the block: the model, its
    schedule, the chains and the codes are made in it."""
    import torch

    previous, dtype = torch.get_default_dtype(), getattr(torch, resolved_dtype(name))
    torch.set_default_dtype(dtype)
    try:
        yield dtype
    finally:
        torch.set_default_dtype(previous)


class ConfigError(SparsegenError, ValueError):
    """A setting that is out of range or unknown."""


class ModelSpecError(ConfigError):
    """``model`` (``--model MODULE:NAME``) does not import, names nothing, or builds no model."""


def _positive_int(owner, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def _positive_float(owner, name, value, *, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{owner}.{name} must be a {'non-negative' if allow_zero else 'positive'}"
                          f" finite number, got {value!r}")


@dataclasses.dataclass
class DataConfig:
    spec: str = "mnist5k"
    eval_images: Optional[int] = None  # held-out images evaluated per epoch (None: all)
    image_size: Optional[int] = None  # resize every image to image_size x image_size

    def validate(self):
        if not isinstance(self.spec, str) or not self.spec:
            raise ConfigError(f"data.spec must be a data spec string, got {self.spec!r}")
        if self.eval_images is not None:
            _positive_int("data", "eval_images", self.eval_images)
        if self.image_size is not None:
            _positive_int("data", "image_size", self.image_size, minimum=2)


@dataclasses.dataclass
class NetworkConfig:
    type: str = "mlp"
    latent_dim: int = 100
    hidden: tuple = (400,)
    width: int = 32
    noise_scale: Optional[float] = None  # None: 0.3 * sqrt(pixels / 784) (likelihood_scale)
    likelihood: str = "normal"
    # the first layer's weight norm per latent coordinate (networks.ColumnNorm); None: free
    input_norm: Optional[float] = 3.0

    def validate(self):
        if self.type not in NETWORKS:
            raise ConfigError(f"network.type must be one of {NETWORKS}, got {self.type!r}")
        _positive_int("network", "latent_dim", self.latent_dim)
        self.hidden = tuple(self.hidden)
        for h in self.hidden:
            _positive_int("network", "hidden", h)
        _positive_int("network", "width", self.width)
        if self.noise_scale is not None:
            _positive_float("network", "noise_scale", self.noise_scale)
        if self.input_norm is not None:
            _positive_float("network", "input_norm", self.input_norm)
        if self.likelihood not in ("normal", "bernoulli"):
            raise ConfigError(f"network.likelihood must be 'normal' or 'bernoulli', "
                              f"got {self.likelihood!r}")


def likelihood_scale(noise_scale, image_shape):
    """The likelihood's standard deviation: ``noise_scale``, or with ``None`` the size rule
    ``0.3 * sqrt(pixels / 784)`` — the authors' 0.3 at 28 x 28, and the same strength of the
    whole image's likelihood (its curvature per latent coordinate) on other sizes."""
    if noise_scale is not None:
        return float(noise_scale)
    return 0.3 * math.sqrt(math.prod(image_shape) / 784)


@dataclasses.dataclass
class PriorConfig:
    """The annealing schedule: a preset (sized to the run's length) or an explicit schedule."""

    preset: str = "default"
    # "learned" / "hierarchical": slab weights learned after the annealing; "learned-scale":
    # slab weights and slab scales (per dimension)
    kind: str = "annealed"
    final_slab_weight: Optional[float] = None  # overrides the preset's floor
    spike_scale: Optional[float] = None  # overrides the preset's final spike scale
    # the default / v1 presets' shape: the dense share of the run before the annealing (0.3;
    # v1's 0.1) and the slab's scale (1.0)
    dense_fraction: Optional[float] = None
    slab_scale: Optional[float] = None
    schedule: Optional[dict] = None  # an explicit Schedule.to_dict(); wins over the preset

    def validate(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"prior.preset must be one of {PRESETS}, got {self.preset!r}")
        if self.kind not in PRIOR_KINDS:
            raise ConfigError(f"prior.kind must be one of {PRIOR_KINDS}, got {self.kind!r}")
        if self.final_slab_weight is not None and not (
                isinstance(self.final_slab_weight, (int, float))
                and 0 <= self.final_slab_weight <= 1):
            raise ConfigError(f"prior.final_slab_weight must lie in [0, 1], "
                              f"got {self.final_slab_weight!r}")
        if self.spike_scale is not None:
            _positive_float("prior", "spike_scale", self.spike_scale)
        if self.slab_scale is not None:
            _positive_float("prior", "slab_scale", self.slab_scale)
        if self.dense_fraction is not None and not (
                isinstance(self.dense_fraction, (int, float))
                and not isinstance(self.dense_fraction, bool)
                and 0 <= self.dense_fraction <= MAX_DENSE_FRACTION):
            raise ConfigError(f"prior.dense_fraction must lie in [0, {MAX_DENSE_FRACTION}], "
                              f"got {self.dense_fraction!r}")
        shaped = [n for n in ("dense_fraction", "slab_scale") if getattr(self, n) is not None]
        if shaped and self.preset not in SHAPED_PRESETS:
            raise ConfigError(f"prior.{shaped[0]} shapes the default and v1 presets only, not "
                              f"{self.preset!r}")
        if self.schedule is not None:
            try:
                schedules.Schedule.from_dict(self.schedule)
            except ValueError as e:
                raise ConfigError(f"prior.schedule: {e}") from None


#: langevin.compile = "auto" compiles the short run of a training run with at least this many
#: steps: the compile costs 10-20 s once (an MLP, 2 CPU cores) and saves about a third of every
#: Langevin step (benchmarks/kernel_step.py), which repays it after a few hundred steps; the
#: default main job (800 steps) runs in 63-80 s compiled against 98 s eager (docs/benchmarks.md)
AUTO_COMPILE_ITERATIONS = 600


@dataclasses.dataclass
class LangevinConfig:
    step_size: float = 0.05
    num_steps: int = 30
    noise: bool = False
    init: str = "zeros"
    prior_step: str = "semi-implicit"
    metropolis: bool = False  # MALA (needs noise): exact sampling of the codes
    # the short run compiled with torch.compile: true, false, or "auto" (training runs of at
    # least AUTO_COMPILE_ITERATIONS steps, where the compile pays for itself)
    compile: object = "auto"
    max_divergence_fraction: float = 0.01  # stop training when more chain-steps diverge
    sparsify: bool = True  # set coordinates with inclusion probability < 0.5 to exactly 0

    def validate(self):
        _positive_float("langevin", "step_size", self.step_size)
        _positive_int("langevin", "num_steps", self.num_steps)
        if self.init not in ("zeros", "prior", "normal"):
            raise ConfigError(f"langevin.init must be zeros, prior or normal, got {self.init!r}")
        if self.prior_step not in ("explicit", "semi-implicit"):
            raise ConfigError(f"langevin.prior_step must be explicit or semi-implicit, "
                              f"got {self.prior_step!r}")
        for name in ("noise", "sparsify", "metropolis"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"langevin.{name} must be true or false, "
                                  f"got {getattr(self, name)!r}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"langevin.compile must be true, false or \"auto\", "
                              f"got {self.compile!r}")
        if self.metropolis and not self.noise:
            raise ConfigError("langevin.metropolis needs langevin.noise = true")
        if self.noise and not self.metropolis and self.prior_step == "semi-implicit":
            raise ConfigError(
                "langevin.noise = true with the semi-implicit prior step and no Metropolis "
                "correction samples a wrong distribution; use noise = false (MAP, the default), "
                "metropolis = true (exact MALA) or prior_step = \"explicit\" (ULA)")
        _positive_float("langevin", "max_divergence_fraction", self.max_divergence_fraction,
                        allow_zero=True)

    def compiled(self, iterations=None):
        """Whether a kernel for a run of ``iterations`` training steps compiles its short run:
        ``compile`` itself when it is true or false; for ``"auto"``, when ``iterations`` is at
        least :data:`AUTO_COMPILE_ITERATIONS` (``None``, e.g. an encoder: no)."""
        if isinstance(self.compile, bool):
            return self.compile
        return iterations is not None and iterations >= AUTO_COMPILE_ITERATIONS

    def kernel_options(self, iterations=None):
        return {"step_size": self.step_size, "num_steps": self.num_steps, "noise": self.noise,
                "init": self.init, "prior_step": self.prior_step, "metropolis": self.metropolis,
                "adapt_step_size": False, "crossing": False,
                "compile": self.compiled(iterations)}


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1e-2
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 100
    epochs: int = 20
    stop_on_collapse: bool = True  # after the annealing (see monitor.CollapseWatch)

    def validate(self):
        _positive_float("optim", "lr", self.lr)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"optim.{name} must lie in [0, 1), got {value!r}")
        _positive_int("optim", "batch_size", self.batch_size)
        _positive_int("optim", "epochs", self.epochs)
        if not isinstance(self.stop_on_collapse, bool):
            raise ConfigError(f"optim.stop_on_collapse must be true or false, "
                              f"got {self.stop_on_collapse!r}")


@dataclasses.dataclass
class TrainConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    prior: PriorConfig = dataclasses.field(default_factory=PriorConfig)
    langevin: LangevinConfig = dataclasses.field(default_factory=LangevinConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    threshold: float = ACTIVE_THRESHOLD  # |z| above which a coordinate is active
    model: Optional[str] = None  # "MODULE:NAME" of a user's model factory (default: built in)
    # the floating dtype of the weights, the codes and the chains: "float32", "float64", or
    # None for torch's default dtype when training starts (then the checkpoint's weights tell
    # it: builders.run_dtype); resume, encode and analyze use it
    dtype: Optional[str] = None

    @classmethod
    def recipe(cls, name):
        """The default config with the named recipe's settings (:data:`RECIPES`): ``"default"``
        or ``"v1"`` (the first release's: slab weight 1 → 0.5, free generator scale, σ 0.3)."""
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
        config = cls()
        config.apply_recipe(name)
        return config

    def apply_recipe(self, name):
        """Set the named recipe's settings on this config (returns it)."""
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
        for (section, key), value in RECIPES[name].items():
            setattr(getattr(self, section), key, value)
        return self.validate()

    def validate(self):
        for section in (self.data, self.network, self.prior, self.langevin, self.optim):
            section.validate()
        if self.model is not None and not (isinstance(self.model, str) and
                                           MODEL_SPEC.fullmatch(self.model)):
            raise ConfigError(f"model must be MODULE:NAME (a factory importable from MODULE), "
                              f"got {self.model!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        _positive_float("config", "threshold", self.threshold)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        return self

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["network"]["hidden"] = list(self.network.hidden)
        return out

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        kwargs = {}
        for name, value in data.items():
            field_type = sections[name].default_factory if sections[name].default_factory \
                is not dataclasses.MISSING else None
            if field_type is None:
                kwargs[name] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config section {name!r} must be a mapping")
            allowed = {f.name for f in dataclasses.fields(field_type)}
            bad = set(value) - allowed
            if bad:
                raise ConfigError(f"unknown keys in config section {name!r}: "
                                  f"{', '.join(sorted(bad))}")
            kwargs[name] = field_type(**value)
        return cls(**kwargs).validate()

    @classmethod
    def from_file(cls, path):
        """Read a JSON (``.json``) or TOML (``.toml``) config file: the keys it leaves out keep
        their defaults."""
        path = os.fspath(path)
        data = read_mapping(path)
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from None

    def build_schedule(self, iterations_per_epoch=None):
        """The prior's schedule for this run, sized to its number of iterations (an explicit
        ``prior.schedule`` needs no size: a model factory gets the run's schedule that way)."""
        if self.prior.schedule is not None:
            return schedules.Schedule.from_dict(self.prior.schedule)
        if iterations_per_epoch is None:
            raise ConfigError("the schedule preset is sized to the run: give "
                              "iterations_per_epoch (or an explicit prior.schedule)")
        total = iterations_per_epoch * self.optim.epochs
        return preset_schedule(self.prior.preset, total, iterations_per_epoch,
                               final_slab_weight=self.prior.final_slab_weight,
                               spike_scale=self.prior.spike_scale,
                               dense_fraction=self.prior.dense_fraction,
                               slab_scale=self.prior.slab_scale)


def read_mapping(path):
    """The mapping in a JSON (``.json``) or TOML (``.toml``) config file, as written (a
    partial config: ``TrainConfig.from_dict`` fills in the rest); an unreadable or
    malformed file is a one-line :class:`ConfigError`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        data = tomllib.loads(raw.decode()) if path.endswith(".toml") else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}"
                          f" ({e})") from None
    return data


def preset_schedule(name, total_iterations, iterations_per_epoch=1, *, final_slab_weight=None,
                    spike_scale=None, dense_fraction=None, slab_scale=None):
    """Named schedules sized to a run of ``total_iterations``.

    - ``default``: dense for the first 30 % of the run (``dense_fraction``), then over the
      next 50 % the slab weight falls (cosine) from 1 to ``final_slab_weight`` (0.8) while the
      spike narrows geometrically from the slab's scale (``slab_scale``, 1) to ``spike_scale``
      (0.04); constant for the rest (20 % by default). Before the annealing the prior is the
      slab alone, N(0, ``slab_scale``²). Meant for ``prior_step="semi-implicit"`` with
      ``sparsify=True`` and a generator whose first layer has fixed column norms
      (``network.input_norm``).
    - ``v1``: the first release's default: the same with the slab weight falling to 0.5 and
      10 % of the run dense.
    - ``dense``: N(0, 1), classic ABP.
    - ``authors``: ``w = 1`` for 20 epochs (or half the run if shorter), then ``w`` falls by
      0.033 per iteration to ``final_slab_weight`` (0.001); spike 0.1.
    - ``spike``: ``w`` fixed at ``final_slab_weight`` (0.1), the spike narrowing 1 → 0.1
      (``spike_scale``) over the first 60 % of the run.
    - ``constant``: ``w = final_slab_weight`` (0.1), spike ``spike_scale`` (0.1) throughout.
    """
    if name not in SHAPED_PRESETS and (dense_fraction, slab_scale) != (None, None):
        raise ConfigError(f"dense_fraction and slab_scale shape the default and v1 presets "
                          f"only, not {name!r}")
    if name == "dense":
        return schedules.dense()
    if name == "authors":
        warmup = min(20 * iterations_per_epoch, total_iterations // 2)
        floor = 0.001 if final_slab_weight is None else final_slab_weight
        return schedules.authors(warmup, 0.033, min(floor, 0.999))
    if name == "spike":
        return schedules.spike_shrink(0.1 if final_slab_weight is None else final_slab_weight,
                                      1.0, 0.1 if spike_scale is None else spike_scale,
                                      max(1, int(0.6 * total_iterations)))
    if name == "constant":
        return schedules.constant(0.1 if final_slab_weight is None else final_slab_weight, 1.0,
                                  0.1 if spike_scale is None else spike_scale)
    if name in SHAPED_PRESETS:
        share = DENSE_FRACTION[name] if dense_fraction is None else dense_fraction
        warmup = int(share * total_iterations)
        slab = 1.0 if slab_scale is None else float(slab_scale)
        span = max(1, int(0.5 * total_iterations))
        final_w = (0.8 if name == "default" else 0.5) if final_slab_weight is None \
            else final_slab_weight
        final_s = 0.04 if spike_scale is None else spike_scale
        if slab <= final_s:
            raise ConfigError(f"the slab's scale ({slab:g}) must exceed the final spike scale "
                              f"({final_s:g}): the slab would become the spike")
        weight = schedules.Curve("cosine", 1.0, final_w, 0, span)
        spike = schedules.Curve("exponential", slab, final_s, 0, span)
        return schedules.Schedule(weight, slab, spike, warmup=warmup)
    raise ConfigError(f"unknown schedule preset {name!r}; choose from {PRESETS}")
