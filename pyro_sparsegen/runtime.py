"""Runtime: devices, random-number streams, torch.distributed and Ctrl-C (imports nothing of
the package)."""

import importlib
import random
import signal

import numpy as np
import torch


class LazyModule:
    """A module imported on its first attribute access: ``az = LazyModule("arviz")`` at the
    top of a module keeps ``import pyro_sparsegen`` (and so every command's start) from
    importing ArviZ, xarray, SciPy and matplotlib (about 2 s) until a function uses them."""

    def __init__(self, name):
        self.__dict__["_name"] = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self.__dict__["_name"]), attr)

    def __repr__(self):
        return f"<module {self.__dict__['_name']!r}, imported when used>"


def resolve_device(name, error=ValueError):
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU raises ``error``
    (one line)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise error(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name)


def cuda_devices(*trees):
    """Indices of the CUDA devices the tensors (and modules' parameters) in ``trees`` and the
    default device use."""
    devices = {torch.get_default_device()}

    def visit(value):
        if isinstance(value, torch.Tensor):
            devices.add(value.device)
        elif isinstance(value, torch.nn.Module):
            devices.update(p.device for p in value.parameters())
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    for tree in trees:
        visit(tree)
    return sorted({torch.cuda.current_device() if d.index is None else d.index
                   for d in devices if d.type == "cuda"})


def forked_rng(*trees):
    """Run a block without consuming the global RNG (CPU and the CUDA devices in use)."""
    return torch.random.fork_rng(devices=cuda_devices(*trees))


# -- the global random-number streams --
def seed_everything(seed):
    """Seed the global Python, NumPy and torch (CPU and CUDA) streams."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed, rank):
    """The torch seed of ``rank`` under torch.distributed, so that every rank draws its own
    Langevin noise (and prior starts); derived from ``(seed, rank)``."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0])


def rng_states():
    """This process's RNG streams: ``python``, ``numpy`` (the global ones), ``torch`` (CPU) and
    ``cuda`` (every device, when CUDA is available)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
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


# -- torch.distributed --
def distributed():
    """``torch.distributed`` when a process group is initialised, else ``None`` (the one
    check of the package)."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def distributed_context():
    """``(torch.distributed or None, rank, world size)`` of this process."""
    dist = distributed()
    if dist is None:
        return None, 0, 1
    return dist, dist.get_rank(), dist.get_world_size()


def gather(obj, dist=None):
    """``[obj of rank 0, obj of rank 1, ...]`` (every rank must call it); ``[obj]`` alone."""
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def stop_everywhere(problem, dist=None, device="cpu", error=RuntimeError):
    """Raise ``error(problem)`` on every rank as soon as any rank has a ``problem`` (a
    one-line reason, or ``None``), so that no rank is left waiting in a collective the failed
    one never joins. Under torch.distributed every rank must call it (one flag all-reduce)."""
    if dist is not None:
        flag = torch.tensor([0.0 if problem is None else 1.0], device=device)
        dist.all_reduce(flag)
        if flag.item() > 0:
            rank, problem = next((r, p) for r, p in enumerate(gather(problem, dist))
                                 if p is not None)
            problem = f"rank {rank}: {problem}"
            # every rank leaves together: a rank tearing down while another still finishes
            # the gather can make gloo abort a process at exit
            dist.barrier()
    if problem is not None:
        raise error(problem)


def any_rank(flag, dist=None, device="cpu"):
    """Whether ``flag`` (a bool) is set on any rank (one all-reduce under torch.distributed;
    every rank must call it)."""
    if dist is None:
        return bool(flag)
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value)
    return value.item() > 0


class InterruptGuard:
    """SIGINT sets a flag checked between chunks of batches (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
