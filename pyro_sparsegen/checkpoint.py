"""One HDF5 file per run: weights, optimizer, schedule position, RNG states, config, metrics.

Written atomically: a temporary file in the same folder, flushed and fsynced, then
``os.replace``d over the previous checkpoint, so an interrupted write never damages it.
"""

import importlib
import json
import os
import random
import time

import h5py
import numpy as np
import torch

from .files import atomic_file, remove_stale_temporaries  # noqa: F401  (re-exported)

FORMAT = "pyro_sparsegen.checkpoint"
FORMAT_VERSION = 2  # 2: per-parameter optimiser states, param-store parameters, model factories
FUNCTION = "function"  # the model class recorded for a plain Pyro function model
PACKAGE = __name__.partition(".")[0]


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit what is asked of it."""


def _package_version():
    from . import __version__

    return __version__


def class_path(obj_or_cls):
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


def is_own_class(path):
    """Whether ``module:Name`` names a module of this package (importing it runs only our code)."""
    module = path.partition(":")[0]
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def import_class(path):
    module, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"cannot import model class {path!r} recorded in the checkpoint "
                              f"({e}); import the module that defines it first") from None
    return obj


# -- tensors and nested state in HDF5 --
def _write_tensors(group, tensors):
    for name, value in tensors.items():
        group.create_dataset(name.replace("/", "|"), data=value.detach().cpu().numpy())


def _read_tensors(group):
    return {name.replace("|", "/"): torch.from_numpy(np.asarray(group[name][()]))
            for name in group}


def _write_optimizer(group, state_dict):
    group.attrs["param_groups"] = json.dumps(state_dict["param_groups"])
    states = group.create_group("state")
    for index, state in state_dict["state"].items():
        g = states.create_group(str(index))
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                g.create_dataset(key, data=value.detach().cpu().numpy())
            else:
                g.attrs[key] = json.dumps(value)


def _read_optimizer(group):
    state = {}
    for index in group["state"]:
        g = group["state"][index]
        entry = {key: torch.from_numpy(np.asarray(g[key][()])) for key in g}
        entry.update({key: json.loads(v) for key, v in g.attrs.items()})
        state[int(index)] = entry
    return {"state": state, "param_groups": json.loads(group.attrs["param_groups"])}


def rng_states():
    """This process's RNG streams: ``python``, ``numpy`` (the global ones), ``torch`` (CPU) and
    ``cuda`` (every device, when CUDA is available)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _write_rng(group, states):
    version, internal, gauss = states["python"]
    group.create_dataset("python", data=np.asarray(internal, dtype=np.uint64))
    group.attrs["python_version"] = version
    group.attrs["python_gauss"] = json.dumps(gauss)
    kind, keys, pos, has_gauss, cached = states["numpy"]
    group.create_dataset("numpy", data=keys)
    group.attrs["numpy"] = json.dumps([kind, int(pos), int(has_gauss), float(cached)])
    group.create_dataset("torch", data=states["torch"].numpy())
    for i, s in enumerate(states.get("cuda", [])):
        group.create_dataset(f"cuda{i}", data=s.numpy())


def _read_rng(group):
    states = {"python": (int(group.attrs["python_version"]),
                         tuple(int(v) for v in group["python"][()]),
                         json.loads(group.attrs["python_gauss"]))}
    kind, pos, has_gauss, cached = json.loads(group.attrs["numpy"])
    states["numpy"] = (kind, group["numpy"][()], pos, has_gauss, cached)
    states["torch"] = torch.from_numpy(group["torch"][()])
    cuda = sorted((k for k in group if k.startswith("cuda")), key=lambda k: int(k[4:]))
    if cuda:
        states["cuda"] = [torch.from_numpy(group[k][()]) for k in cuda]
    return states


def _restore_cuda(states):
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


# one restore per stream (tests break them one at a time)
RNG_RESTORERS = {"python": random.setstate, "numpy": np.random.set_state,
                 "torch": torch.set_rng_state, "cuda": _restore_cuda}


def restore_rng(states):
    """Set every stream saved in ``states`` (from :func:`rng_states`)."""
    for name, state in states.items():
        RNG_RESTORERS[name](state)


# -- the file --
def save(path, *, model, config, optimizer=None, optimizer_states=None, params=None,
         progress=None, metrics=(), extra=None, rng=None, before_replace=None):
    """Write a checkpoint atomically.

    :param model: the model: a ``torch.nn.Module`` (its class is recorded; its
        ``state_dict`` and ``network.config()`` are stored) or a
        :class:`~pyro_sparsegen.model.FunctionModel` (its factory is recorded).
    :param dict config: the run's configuration (JSON-serialisable).
    :param optimizer: a torch optimizer or ``None``.
    :param optimizer_states: ``{parameter name: torch optimizer state dict}`` (one optimiser
        per parameter, :meth:`pyro_sparsegen.ABP.optimizer_state`).
    :param params: ``{name: (unconstrained tensor, constraint name)}`` of Pyro's param store
        (:func:`store_params`): saved as tensors with their constraint's name, never pickled.
    :param dict progress: ``epoch``, ``iteration``, ``batch_in_epoch`` and any numbers.
    :param metrics: the metrics history (list of dicts).
    :param dict extra: more JSON-serialisable attributes.
    :param rng: the RNG states to store: one :func:`rng_states` dict per rank (a list, rank 0
        first, under torch.distributed), or ``None`` for this process's.
    :param before_replace: a callable run after the temporary file is complete and before it
        replaces ``path`` (tests use it to interrupt a write).
    """
    path = os.fspath(path)
    is_module = isinstance(model, torch.nn.Module)
    with atomic_file(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["package_version"] = _package_version()
            f.attrs["model_class"] = class_path(model) if is_module else FUNCTION
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            f.attrs["config"] = json.dumps(config)
            network = getattr(model, "network", None)
            f.attrs["network"] = json.dumps(network.config() if hasattr(network, "config")
                                            else {})
            f.attrs["model_options"] = json.dumps(model_options(model))
            f.attrs["progress"] = json.dumps(progress or {})
            f.attrs["metrics"] = json.dumps(list(metrics))
            f.attrs["extra"] = json.dumps(extra or {})
            _write_tensors(f.create_group("model"), model.state_dict() if is_module else {})
            group = f.create_group("params")
            for name, (value, constraint) in (params or {}).items():
                key = name.replace("/", "|")
                group.create_dataset(key, data=value.detach().cpu().numpy())
                group[key].attrs["constraint"] = constraint
            if optimizer is not None:
                _write_optimizer(f.create_group("optimizer"), optimizer.state_dict())
            if optimizer_states is not None:
                group = f.create_group("optimizers")
                for name, state in optimizer_states.items():
                    _write_optimizer(group.create_group(name.replace("/", "|")), state)
            ranks = [rng_states()] if rng is None else list(rng)
            _write_rng(f.create_group("rng"), ranks[0])
            if len(ranks) > 1:
                others = f.create_group("rng_ranks")
                for rank, states in enumerate(ranks[1:], start=1):
                    _write_rng(others.create_group(str(rank)), states)
            f.flush()
        if before_replace is not None:
            before_replace(tmp)
    return path


def store_params(model):
    """``{name: (unconstrained value, constraint name)}`` of Pyro's param store, less the
    parameters an ``nn.Module`` model keeps in its own ``state_dict``."""
    import pyro

    store = pyro.get_param_store()
    own = {id(p) for p in model.parameters()} if isinstance(model, torch.nn.Module) else set()
    out = {}
    for name, value in store.named_parameters():
        if id(value) not in own:
            out[name] = (value.detach(), repr(store._constraints[name]))
    return out


def model_options(model):
    """Constructor options of a generator model (besides its network)."""
    options = {}
    if hasattr(model, "schedule"):
        options["schedule"] = model.schedule.to_dict()
    for name in ("noise_scale", "likelihood_kind", "iteration"):
        if hasattr(model, name):
            options[name] = getattr(model, name)
    if hasattr(model, "checkpoint_options"):
        options.update(model.checkpoint_options())
    if not isinstance(model, torch.nn.Module):  # a function model
        options.update(image_shape=list(model.image_shape), factory=model.factory)
    return options


class Checkpoint:
    """A loaded checkpoint: ``attrs`` (config, progress, metrics, ...), ``model_state``,
    ``optimizer_state``, ``rng`` (rank 0's streams), ``rng_ranks`` (every rank's, rank 0
    first), and :meth:`build_model`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        name = os.path.basename(self.path)
        if not os.path.exists(self.path):
            raise CheckpointError(f"{self.path}: no such checkpoint")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise CheckpointError(f"{name}: not a pyro_sparsegen checkpoint")
                if int(f.attrs["format_version"]) > FORMAT_VERSION:
                    raise CheckpointError(f"{name}: written by a newer format version "
                                          f"({f.attrs['format_version']})")
                self.model_class = str(f.attrs["model_class"])
                self.package_version = str(f.attrs["package_version"])
                self.config = json.loads(f.attrs["config"])
                self.network = json.loads(f.attrs["network"])
                self.model_options = json.loads(f.attrs["model_options"])
                self.progress = json.loads(f.attrs["progress"])
                self.metrics = json.loads(f.attrs["metrics"])
                self.extra = json.loads(f.attrs["extra"])
                self.format_version = int(f.attrs["format_version"])
                self.model_state = _read_tensors(f["model"])
                self.optimizer_state = _read_optimizer(f["optimizer"]) if "optimizer" in f \
                    else None
                self.optimizer_states = {
                    name.replace("|", "/"): _read_optimizer(group)
                    for name, group in f["optimizers"].items()} if "optimizers" in f else None
                self.params = {name.replace("|", "/"): (torch.from_numpy(np.asarray(d[()])),
                                                        str(d.attrs["constraint"]))
                               for name, d in f["params"].items()} if "params" in f else {}
                self.rng = _read_rng(f["rng"])
                others = f.get("rng_ranks", {})
                self.rng_ranks = [self.rng] + [_read_rng(others[str(r)])
                                               for r in range(1, len(others) + 1)]
        except CheckpointError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{name}: unreadable or damaged checkpoint ({e})") from None

    def resolve_model_class(self, *, trust_model=False, model_class=None):
        """The recorded model class. Only this package's own classes are imported unless the
        caller opts in: ``trust_model=True``, or ``model_class`` given (it must be the
        recorded class; it is used as it is, nothing is imported)."""
        name = os.path.basename(self.path)
        if model_class is not None:
            given = class_path(model_class) if isinstance(model_class, type) else repr(model_class)
            if given != self.model_class:
                raise CheckpointError(f"{name}: records model class {self.model_class}, not "
                                      f"{given}")
            cls = model_class
        elif trust_model:
            cls = import_class(self.model_class)
        elif is_own_class(self.model_class):
            cls = import_class(self.model_class)
            if isinstance(cls, type) and not is_own_class(class_path(cls)):  # a re-export
                raise CheckpointError(f"{name}: records {self.model_class}, which is "
                                      f"{class_path(cls)} from outside {PACKAGE}; pass "
                                      "--trust-model (trust_model=True) if you trust it")
        else:
            raise CheckpointError(
                f"{name}: records model class {self.model_class} from outside {PACKAGE}; "
                "loading it imports and runs that module: pass --trust-model (trust_model=True, "
                "or the class as model_class) if you trust it")
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)
                and hasattr(cls, "likelihood")):
            raise CheckpointError(f"{name}: records {self.model_class}, which is not a "
                                  "generator model")
        return cls

    @property
    def image_shape(self):
        """``(C, H, W)`` of the images the model was trained on."""
        shape = self.network.get("image_shape") or self.model_options.get("image_shape")
        return tuple(shape) if shape else None

    @property
    def factory(self):
        """The recorded model factory (``MODULE:NAME``), or ``None`` for a built-in model."""
        return self.config.get("model") if isinstance(self.config, dict) else None

    def _check_factory(self, trust_model, factory):
        """Importing a factory runs its module: only this package's, or with the opt-in."""
        name, recorded = os.path.basename(self.path), self.factory
        if factory is not None and factory != recorded:
            raise CheckpointError(f"{name}: records model factory {recorded}, not {factory}")
        if factory is None and not trust_model and not is_own_class(recorded):
            raise CheckpointError(
                f"{name}: records model factory {recorded} from outside {PACKAGE}; loading it "
                f"imports and runs that module: pass --model {recorded} or --trust-model "
                "(model=... or trust_model=True) if you trust it")

    def _load_params(self, model):
        """Put the saved param-store values into Pyro's param store (the model is run once,
        so that it declares its parameters and their constraints)."""
        if not self.params:
            return
        import pyro

        from .runtime import forked_rng

        name = os.path.basename(self.path)
        store = pyro.get_param_store()
        for key in self.params:  # stale entries of these names would shadow the new model's
            if key in store:
                del store[key]
        with forked_rng(model), pyro.validation_enabled(False), torch.no_grad():
            model(None, num_images=1)
        current = dict(store.named_parameters())
        for key, (value, constraint) in self.params.items():
            if key not in current:
                raise CheckpointError(f"{name}: the model no longer declares parameter {key!r}")
            if repr(store._constraints[key]) != constraint:
                raise CheckpointError(f"{name}: parameter {key!r} was saved with constraint "
                                      f"{constraint}, the model declares "
                                      f"{store._constraints[key]!r}")
            with torch.no_grad():
                current[key].copy_(value.to(current[key].device))

    def build_model(self, device="cpu", *, trust_model=False, model_class=None, factory=None):
        """Rebuild the model (of the recorded class, or by the recorded factory) with the
        stored weights; see :meth:`resolve_model_class` for ``trust_model`` and
        ``model_class``; ``factory`` (``MODULE:NAME``) naming the recorded factory is the
        opt-in to import it."""
        from .networks import build_network
        from .schedules import Schedule, set_iteration

        name = os.path.basename(self.path)
        if self.factory is not None:
            self._check_factory(trust_model, factory)
            from .config import ConfigError, TrainConfig
            from .training import build_model

            config = TrainConfig.from_dict(self.config)
            if "schedule" in self.model_options:
                config.prior.schedule = self.model_options["schedule"]
            try:
                model = build_model(config, self.image_shape, None, device=device)
            except ConfigError as e:
                raise CheckpointError(f"{name}: cannot rebuild the model ({e})") from None
            if isinstance(model, torch.nn.Module):
                model = model.to(device)
                try:
                    model.load_state_dict(self.model_state)
                except RuntimeError as e:
                    raise CheckpointError(f"{name}: weights do not fit the model "
                                          f"{self.factory} builds: "
                                          f"{str(e).splitlines()[0]}") from None
            self._load_params(model)
            iteration = self.progress.get("iteration", 0)
            set_iteration(iteration)
            if hasattr(model, "iteration"):
                model.iteration = iteration
            return model
        cls = self.resolve_model_class(trust_model=trust_model, model_class=model_class)
        options = dict(self.model_options)
        iteration = options.pop("iteration", 0)
        if "schedule" in options:
            options["schedule"] = Schedule.from_dict(options["schedule"])
        if "likelihood_kind" in options:
            options["likelihood"] = options.pop("likelihood_kind")
        try:
            network = build_network(self.network)
            build = getattr(cls, "from_checkpoint_options", cls)
            model = build(network, **options)
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{name}: cannot rebuild {self.model_class} ({e})") from None
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as e:
            raise CheckpointError(f"{name}: weights do not fit "
                                  f"{self.model_class}: {str(e).splitlines()[0]}") from None
        if hasattr(model, "iteration"):
            model.iteration = iteration
        model = model.to(device)
        self._load_params(model)
        return model


def load(path):
    """Read a checkpoint file (raises :class:`CheckpointError` with a one-line reason)."""
    return Checkpoint(path)
