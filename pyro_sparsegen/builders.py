"""Builders: a run's pieces from its config — the data splits, the generator network, the
model (built in, a ``SparseGenerator`` subclass, or a user's factory), the kernel and the
optimiser — and the model of a checkpoint rebuilt under the trust policy (:func:`load_run`,
:func:`read_run`, :func:`check_resumable`).

The trust policy: a checkpoint names the class (or factory) its model was built by; code from
outside this package is imported only when the caller opts in (``trust_model=True``, the class
itself passed as ``model_class``, or ``factory`` naming the recorded ``MODULE:NAME``), so that
a file from someone else never decides what code runs.
"""

import importlib
import os
import sys

import pyro
import torch

from . import checkpoint as ckpt
from . import networks
from .config import (ConfigError, ModelSpecError, TrainConfig, default_dtype, likelihood_scale,
                     resolved_dtype)
from .errors import first_line
from .infer import ShortRunLangevin
from .model import FunctionModel, SparseGenerator
from .runtime import forked_rng
from .schedules import Schedule, set_iteration

PACKAGE = __name__.partition(".")[0]


# -- a run's pieces from its config ---------------------------------------------------------
def load_splits(config: TrainConfig, train_data=None, test_data=None):
    """The run's train and test :class:`~pyro_sparsegen.data.ImageData` (given ones win)."""
    if train_data is None or test_data is None:
        from .data import load_data

        size = config.data.image_size
        if train_data is None:
            train_data = load_data(config.data.spec, "train", image_size=size)
        if test_data is None:
            test_data = load_data(config.data.spec, "test", image_size=size)
    if len(train_data) < 1:
        raise ConfigError("the training split is empty")
    return train_data, test_data


def network_spec(config: TrainConfig, image_shape):
    """The ``config()`` dict of the generator network a run's config asks for (what
    :func:`pyro_sparsegen.networks.build_network` builds and checkpoints record)."""
    net = config.network
    spec = {"type": net.type, "latent_dim": net.latent_dim, "image_shape": list(image_shape),
            "input_norm": net.input_norm}
    if net.type == "conv":
        spec["width"] = net.width
    else:
        spec["hidden"] = list(net.hidden)
    return spec


def build_network(config: TrainConfig, image_shape):
    """The generator network of a run's config, for images ``image_shape`` ``(C, H, W)``."""
    return networks.build_network(network_spec(config, image_shape))


def import_factory(spec):
    """The object ``MODULE:NAME`` names, importable from the working directory (a user's
    model factory); a module that does not import or a missing name is a one-line
    :class:`~pyro_sparsegen.config.ModelSpecError`."""
    module, _, name = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure of user code is a user error
        raise ModelSpecError(f"--model {spec}: module {module!r} does not import "
                             f"({type(e).__name__}: {first_line(e) if str(e).strip() else ''})"
                             ) from None
    finally:
        sys.path.pop(0)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"--model {spec}: {module} has no {name!r}")
        obj = getattr(obj, part)
    return obj


def build_model(config: TrainConfig, image_shape, iterations_per_epoch, model_class=None,
                device=None):
    """A fresh model from the config: a :class:`~pyro_sparsegen.SparseGenerator` (of
    ``model_class``, a subclass, when given), or what ``config.model`` (``MODULE:NAME``)
    builds.

    A factory is called ``NAME(image_shape, config)`` and returns a Pyro model following the
    generator convention (a function, wrapped in :class:`~pyro_sparsegen.model.FunctionModel`,
    or a ``PyroModule``); ``config.build_schedule()`` gives it the run's annealing schedule and
    ``config.device`` the device the run uses (``device``, resolved: a function model puts its
    tensors there; a ``PyroModule`` is moved by the caller).
    """
    if config.model is not None:
        return _from_factory(config, image_shape, iterations_per_epoch, device)
    cls = model_class or SparseGenerator
    return cls(build_network(config, image_shape),
               schedule=config.build_schedule(iterations_per_epoch),
               noise_scale=likelihood_scale(config.network.noise_scale, image_shape),
               likelihood=config.network.likelihood,
               **({"prior": config.prior.kind} if config.prior.kind != "annealed" else {}))


def _from_factory(config, image_shape, iterations_per_epoch, device):
    factory = import_factory(config.model)
    run_config = TrainConfig.from_dict(config.to_dict())
    run_config.prior.schedule = config.build_schedule(iterations_per_epoch).to_dict()
    if device is not None:
        run_config.device = str(device)
    if not callable(factory):
        raise ModelSpecError(f"--model {config.model}: {type(factory).__name__} is not "
                             "callable (a factory NAME(image_shape, config) -> model)")
    try:
        model = factory(tuple(image_shape), run_config)
    except Exception as e:  # noqa: BLE001 - user code
        raise ModelSpecError(f"--model {config.model}: the factory failed ({type(e).__name__}: "
                             f"{first_line(e) if str(e).strip() else ''})") from None
    if isinstance(model, torch.nn.Module) and callable(model):
        return model
    if callable(model):
        return FunctionModel(model, image_shape, factory=config.model,
                             schedule=run_config.build_schedule())
    raise ModelSpecError(f"--model {config.model}: returned {type(model).__name__}, not a "
                         "Pyro model (a function or a PyroModule)")


def make_kernel(model, config: TrainConfig, iterations=None):
    """The kernel of a run's config; ``iterations``: the training steps it will run (for
    ``langevin.compile = "auto"``; ``None``: not a training run, never compiled by "auto")."""
    return ShortRunLangevin(model, **config.langevin.kernel_options(iterations))


def make_optim(config: TrainConfig, device):
    """The run's ``pyro.optim.Adam`` (its step stays on the device on a GPU)."""
    options = {"lr": config.optim.lr, "betas": (config.optim.beta1, config.optim.beta2)}
    if torch.device(device).type == "cuda":
        options["capturable"] = True
    return pyro.optim.Adam(options)


# -- a checkpoint's model, under the trust policy -------------------------------------------
def is_own_class(path):
    """Whether ``module:Name`` names a module of this package (importing it runs only our code)."""
    module = path.partition(":")[0]
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def import_class(path):
    """The object ``module:QualName`` names (a recorded model class); one-line
    :class:`~pyro_sparsegen.checkpoint.CheckpointError` when it does not import."""
    module, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ckpt.CheckpointError(f"cannot import model class {path!r} recorded in the "
                                   f"checkpoint ({e}); import the module that defines it "
                                   "first") from None
    return obj


def resolve_model_class(state, *, trust_model=False, model_class=None):
    """The model class ``state`` (a :class:`~pyro_sparsegen.checkpoint.Checkpoint`) records.
    Only this package's own classes are imported unless the caller opts in:
    ``trust_model=True``, or ``model_class`` given (it must be the recorded class; it is used
    as it is, nothing is imported)."""
    name, recorded = os.path.basename(state.path), state.model_class
    if model_class is not None:
        given = ckpt.class_path(model_class) if isinstance(model_class, type) else \
            repr(model_class)
        if given != recorded:
            raise ckpt.CheckpointError(f"{name}: records model class {recorded}, not {given}")
        cls = model_class
    elif trust_model:
        cls = import_class(recorded)
    elif is_own_class(recorded):
        cls = import_class(recorded)
        if isinstance(cls, type) and not is_own_class(ckpt.class_path(cls)):  # a re-export
            raise ckpt.CheckpointError(f"{name}: records {recorded}, which is "
                                       f"{ckpt.class_path(cls)} from outside {PACKAGE}; pass "
                                       "--trust-model (trust_model=True) if you trust it")
    else:
        raise ckpt.CheckpointError(
            f"{name}: records model class {recorded} from outside {PACKAGE}; loading it "
            "imports and runs that module: pass --trust-model (trust_model=True, or the class "
            "as model_class) if you trust it")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)
            and hasattr(cls, "likelihood")):
        raise ckpt.CheckpointError(f"{name}: records {recorded}, which is not a generator "
                                   "model")
    return cls


def check_factory(state, *, trust_model=False, factory=None):
    """Importing a recorded factory runs its module: only this package's, or with the opt-in
    (``trust_model``, or ``factory`` naming the recorded ``MODULE:NAME``)."""
    name, recorded = os.path.basename(state.path), state.factory
    if factory is not None and factory != recorded:
        raise ckpt.CheckpointError(f"{name}: records model factory {recorded}, not {factory}")
    if factory is None and not trust_model and not is_own_class(recorded):
        raise ckpt.CheckpointError(
            f"{name}: records model factory {recorded} from outside {PACKAGE}; loading it "
            f"imports and runs that module: pass --model {recorded} or --trust-model "
            "(model=... or trust_model=True) if you trust it")


def load_store_params(state, model):
    """Put ``state``'s param-store values into Pyro's param store. The model is run once
    (generator convention: ``model(None, num_images=1)``, under a forked RNG) so that it
    declares its parameters and their constraints, which must be the saved ones."""
    if not state.params:
        return
    name = os.path.basename(state.path)
    store = pyro.get_param_store()
    for key in state.params:  # stale entries of these names would shadow the new model's
        if key in store:
            del store[key]
    with forked_rng(model), pyro.validation_enabled(False), torch.no_grad():
        model(None, num_images=1)
    current = dict(store.named_parameters())
    constraints = store.get_state()["constraints"]
    for key, (value, constraint) in state.params.items():
        if key not in current:
            raise ckpt.CheckpointError(f"{name}: the model no longer declares parameter "
                                       f"{key!r}")
        if repr(constraints[key]) != constraint:
            raise ckpt.CheckpointError(f"{name}: parameter {key!r} was saved with constraint "
                                       f"{constraint}, the model declares "
                                       f"{constraints[key]!r}")
        with torch.no_grad():
            current[key].copy_(value.to(current[key].device))


def run_dtype(state):
    """The floating dtype a checkpoint's run trained in: its config's ``dtype``, or for a file
    written before the option, that of its weights (float64 runs then came from torch's
    default dtype)."""
    recorded = state.config.get("dtype") if isinstance(state.config, dict) else None
    if recorded is not None:
        return recorded
    weights = [v for v in (*state.model_state.values(), *(p for p, _ in state.params.values()))
               if v.is_floating_point()]
    return "float64" if weights and weights[0].dtype == torch.float64 else "float32"


def rebuild_model(state, device="cpu", *, trust_model=False, model_class=None, factory=None):
    """The model ``state`` (a :class:`~pyro_sparsegen.checkpoint.Checkpoint`) holds, rebuilt
    (of the recorded class, or by the recorded factory) with the stored weights and
    param-store values, at the stored annealing position, in the run's dtype
    (:func:`run_dtype`); see :func:`resolve_model_class` for ``trust_model`` and
    ``model_class``; ``factory`` (``MODULE:NAME``) naming the recorded factory is the opt-in
    to import it."""
    with default_dtype(run_dtype(state)):
        return _rebuild_model(state, device, trust_model, model_class, factory)


def _rebuild_model(state, device, trust_model, model_class, factory):
    if state.factory is not None:
        return _rebuild_from_factory(state, device, trust_model, factory)
    name = os.path.basename(state.path)
    cls = resolve_model_class(state, trust_model=trust_model, model_class=model_class)
    options = dict(state.model_options)
    iteration = options.pop("iteration", 0)
    if "schedule" in options:
        options["schedule"] = Schedule.from_dict(options["schedule"])
    if "likelihood_kind" in options:
        options["likelihood"] = options.pop("likelihood_kind")
    try:
        network = networks.build_network(state.network)
        build = getattr(cls, "from_checkpoint_options", cls)
        model = build(network, **options)
    except (TypeError, ValueError, KeyError) as e:
        raise ckpt.CheckpointError(f"{name}: cannot rebuild {state.model_class} ({e})") from None
    _load_weights(model, state, f"{state.model_class}")
    if hasattr(model, "iteration"):
        model.iteration = iteration
    model = model.to(device)
    load_store_params(state, model)
    return model


def _rebuild_from_factory(state, device, trust_model, factory):
    check_factory(state, trust_model=trust_model, factory=factory)
    config = TrainConfig.from_dict(state.config)
    if "schedule" in state.model_options:
        config.prior.schedule = state.model_options["schedule"]
    try:
        model = build_model(config, state.image_shape, None, device=device)
    except ConfigError as e:
        raise ckpt.CheckpointError(f"{os.path.basename(state.path)}: cannot rebuild the model "
                                   f"({e})") from None
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
        _load_weights(model, state, f"the model {state.factory} builds")
    load_store_params(state, model)
    iteration = state.progress.get("iteration", 0)
    set_iteration(iteration)
    if hasattr(model, "iteration"):
        model.iteration = iteration
    return model


def _load_weights(model, state, what):
    try:
        model.load_state_dict(state.model_state)
    except RuntimeError as e:
        raise ckpt.CheckpointError(f"{os.path.basename(state.path)}: weights do not fit "
                                   f"{what}: {first_line(e)}") from None


# -- run folders ----------------------------------------------------------------------------
def read_run(run_dir):
    """``(config, checkpoint)`` of a run folder (or a checkpoint file), without rebuilding
    the model (nothing is imported)."""
    run_dir = os.fspath(run_dir)
    if not os.path.exists(run_dir):
        raise ckpt.CheckpointError(f"{run_dir}: no such run folder")
    path = run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, ckpt.CHECKPOINT)
    if not os.path.exists(path):
        raise ckpt.CheckpointError(f"{run_dir}: no {ckpt.CHECKPOINT} in this run folder")
    state = ckpt.load(path)
    try:
        config = TrainConfig.from_dict(state.config)
    except (ConfigError, TypeError) as e:
        raise ckpt.CheckpointError(f"{path}: stored config is invalid ({e})") from None
    return config, state


def load_run(run_dir, device="cpu", *, trust_model=False, model_class=None, model=None):
    """``(model, config, checkpoint)`` from a run folder (or a checkpoint file).

    The model is rebuilt as the class (or factory) the checkpoint records. Code from outside
    this package is imported only when the caller opts in — ``trust_model=True``, the class
    itself passed as ``model_class`` (it must be the recorded one; nothing is imported then),
    or ``model`` (``MODULE:NAME``) naming the recorded factory: a file from someone else must
    not decide what code runs. Otherwise
    :class:`~pyro_sparsegen.checkpoint.CheckpointError`, and nothing is imported. A function
    model's parameters are put into Pyro's param store.
    """
    config, state = read_run(run_dir)
    built = rebuild_model(state, device, trust_model=trust_model, model_class=model_class,
                          factory=model)
    return built, config, state


def check_resumable(state, config, image_shape, world_size=1):
    """Raise :class:`~pyro_sparsegen.config.ConfigError` (one line) unless the run of
    ``state`` can go on under ``config`` on images ``image_shape`` with ``world_size``
    processes: the same model, network, image size, batch size, seed and process count."""
    saved = TrainConfig.from_dict(state.config)
    written_by = state.progress.get("world_size")
    if written_by is not None and written_by != world_size:
        raise ConfigError(f"the checkpoint was written by {written_by} process(es); resume it "
                          f"with as many (this run has {world_size})")
    if saved.model != config.model:
        raise ConfigError(f"the checkpoint's model is {saved.model or 'the built-in one'}; "
                          f"the config asks for {config.model or 'the built-in one'}")
    net = state.network
    if config.model is None:
        if net.get("type") != config.network.type:
            raise ConfigError(f"checkpoint holds a {net.get('type')} network; the config asks "
                              f"for {config.network.type}")
        if net.get("latent_dim") != config.network.latent_dim:
            raise ConfigError(f"checkpoint has latent size {net.get('latent_dim')}; the config "
                              f"asks for {config.network.latent_dim}")
    if tuple(state.image_shape or ()) != tuple(image_shape):
        raise ConfigError(f"checkpoint was trained on images {tuple(state.image_shape or ())}; "
                          f"the data has {tuple(image_shape)}")
    if run_dtype(state) != resolved_dtype(config.dtype):
        raise ConfigError(f"the checkpoint's run trains in {run_dtype(state)}; this run would "
                          f"train in {resolved_dtype(config.dtype)} (set dtype, or torch's "
                          "default dtype, to the checkpoint's)")
    if saved.optim.batch_size != config.optim.batch_size or saved.seed != config.seed:
        raise ConfigError("resume needs the checkpoint's batch size and seed "
                          f"({saved.optim.batch_size}, {saved.seed})")
