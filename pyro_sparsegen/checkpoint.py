"""The checkpoint file format: one HDF5 file per run holding the weights, the optimiser
states, the schedule position, the RNG states, the config, the metrics and the model's
constructor options. Only writes and reads: rebuilding a model from a checkpoint (and the
trust policy of what it may import) is :mod:`pyro_sparsegen.builders`'.

Written atomically (:func:`~pyro_sparsegen.files.atomic_file`): a temporary file in the same
folder, flushed and fsynced, then moved over the previous checkpoint with ``os.replace``, so an
interrupted write never damages it. Format version 3 carries a SHA-256 of the whole file in
its HDF5 user block (:func:`~pyro_sparsegen.files.write_sealed_h5`), checked before libhdf5
reads the file: a truncated file or a changed byte is a one-line :class:`CheckpointError`,
never a different model. Files of versions 1 and 2 (no checksum) still load, with one
:class:`UnverifiedWarning`.
"""

import json
import os
import time

import numpy as np
import torch

from .errors import SparsegenError
from .files import (  # noqa: F401  (atomic_file, UnverifiedWarning re-exported)
    DamagedFileError, UnverifiedWarning, atomic_file, open_verified, warn_unverified,
    write_sealed_h5)
from .files import remove_stale_temporaries  # noqa: F401  (re-exported)
from .runtime import rng_states
from .version import VERSION

FORMAT = "pyro_sparsegen.checkpoint"
FORMAT_VERSION = 3  # 2: per-parameter optimiser states, param-store parameters, model factories;
# 3: the SHA-256 of the file in its user block (files.seal)
SEALED_FROM = 3  # the first format version whose files must carry the checksum
FUNCTION = "function"  # the model class recorded for a plain Pyro function model
# the files of a run folder
CHECKPOINT = "checkpoint.h5"
BEST = "best.h5"  # the best epoch after the annealing (the collapse watch's)
METRICS = "metrics.csv"


class CheckpointError(SparsegenError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit what is asked of it."""


def class_path(obj_or_cls):
    """``module:QualName`` of a class (or of an object's class), as checkpoints record it."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


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


# -- the file --
def save(path, *, model, config, optimizer=None, params=None, progress=None, metrics=(),
         extra=None, rng=None, before_replace=None):
    """Write a checkpoint atomically.

    :param model: the model: a ``torch.nn.Module`` (its class is recorded; its
        ``state_dict`` and ``network.config()`` are stored) or a
        :class:`~pyro_sparsegen.model.FunctionModel` (its factory is recorded).
    :param dict config: the run's configuration (JSON-serialisable).
    :param optimizer: ``{name: torch optimizer state dict}`` or ``None``: the learner's
        optimiser states (one per parameter for :meth:`pyro_sparsegen.ABP.optimizer_state`,
        one for the whole model for the baselines), read back as
        ``Checkpoint.optimizer_states``.
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

    def fill(f):
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["package_version"] = VERSION
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
            group = f.create_group("optimizers")
            for name, state in optimizer.items():
                _write_optimizer(group.create_group(name.replace("/", "|")), state)
        ranks = [rng_states()] if rng is None else list(rng)
        _write_rng(f.create_group("rng"), ranks[0])
        if len(ranks) > 1:
            others = f.create_group("rng_ranks")
            for rank, states in enumerate(ranks[1:], start=1):
                _write_rng(others.create_group(str(rank)), states)

    write_sealed_h5(path, fill, before_replace)  # checksummed, atomic
    return path


def store_params(model):
    """``{name: (unconstrained value, constraint name)}`` of Pyro's param store, less the
    parameters an ``nn.Module`` model keeps in its own ``state_dict``."""
    import pyro

    store = pyro.get_param_store()
    constraints = store.get_state()["constraints"]
    own = {id(p) for p in model.parameters()} if isinstance(model, torch.nn.Module) else set()
    return {name: (value.detach(), repr(constraints[name]))
            for name, value in store.named_parameters() if id(value) not in own}


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
    """A loaded checkpoint (nothing is imported, no model is built): ``config``,
    ``progress``, ``metrics``, ``extra``, ``model_class``, ``network``, ``model_options``,
    ``model_state`` (the ``nn.Module`` weights), ``params`` (Pyro's param store:
    ``{name: (unconstrained value, constraint name)}``), ``optimizer_states``
    (``{name: torch optimizer state dict}``, or ``None``), ``optimizer_state`` (the single
    optimiser of files written before ``optimizers``, else ``None``), ``rng`` (rank 0's
    streams) and ``rng_ranks`` (every rank's, rank 0 first).
    :func:`pyro_sparsegen.builders.rebuild_model` builds the model it holds."""

    def __init__(self, path):
        self.path = os.fspath(path)
        name = os.path.basename(self.path)
        if not os.path.exists(self.path):
            raise CheckpointError(f"{self.path}: no such checkpoint")
        try:
            handle, verified = open_verified(self.path, "checkpoint", warn=False)
        except DamagedFileError as e:
            raise CheckpointError(str(e)) from None
        except OSError as e:
            raise CheckpointError(f"{name}: cannot read the checkpoint ({e.strerror})") from None
        self.verified = verified
        try:
            with handle as f:
                if f.attrs.get("format") != FORMAT:
                    raise CheckpointError(f"{name}: not a pyro_sparsegen checkpoint")
                if int(f.attrs["format_version"]) > FORMAT_VERSION:
                    raise CheckpointError(f"{name}: written by a newer format version "
                                          f"({f.attrs['format_version']})")
                if not verified and int(f.attrs["format_version"]) >= SEALED_FROM:
                    raise CheckpointError(f"{name}: damaged checkpoint (format version "
                                          f"{f.attrs['format_version']} without its checksum)")
                if not verified:
                    warn_unverified(self.path, stacklevel=4)
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
                if self.optimizer_states is None and self.optimizer_state is not None and \
                        self.format_version >= 2:  # a learner of one optimiser, before 0.2
                    self.optimizer_states = {"optimizer": self.optimizer_state}
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

    @property
    def image_shape(self):
        """``(C, H, W)`` of the images the model was trained on."""
        shape = self.network.get("image_shape") or self.model_options.get("image_shape")
        return tuple(shape) if shape else None

    @property
    def factory(self):
        """The recorded model factory (``MODULE:NAME``), or ``None`` for a built-in model."""
        return self.config.get("model") if isinstance(self.config, dict) else None


def load(path):
    """Read a checkpoint file (raises :class:`CheckpointError` with a one-line reason)."""
    return Checkpoint(path)


_MOVED = {name: (f"{__package__}.runtime", name) for name in ("restore_rng", "RNG_RESTORERS")}


def __getattr__(name):
    """The names that moved to :mod:`pyro_sparsegen.runtime`, as deprecated aliases."""
    from .errors import moved

    return moved(__name__, name, _MOVED)
