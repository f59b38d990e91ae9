"""What every error of the package shares: the base class of its own errors
(:class:`SparsegenError`), the one-line message (:func:`first_line`) and the report of an
internal error (:func:`report_bug`). Imports nothing of the package."""

import sys
import traceback

EXIT_ERROR, EXIT_USAGE = 1, 2
EXIT_SOFTWARE = 70  #: sysexits.h's EX_SOFTWARE: an internal error (a bug), not a user's mistake
EXIT_INTERRUPTED = 130


class SparsegenError(Exception):
    """The base of the package's own errors: a bad command line, config, data set, model
    spec, checkpoint or a training run that failed its checks — something the user can fix,
    so the command line prints it in one line (:func:`first_line`) without a traceback.
    Any other exception is a bug: :func:`report_bug`."""


def first_line(error):
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_user_error(error):
    """Whether ``error`` is one to print in one line: the package's own
    (:class:`SparsegenError`), the operating system's (``OSError``: a missing file, a full
    disk, a permission) or running out of memory (``MemoryError``, torch's
    ``OutOfMemoryError``)."""
    if isinstance(error, (SparsegenError, OSError, MemoryError)):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(error, oom)


def report_bug(prog, error, file=None):
    """Print ``error``'s traceback and a line asking for a report to ``file`` (stderr);
    returns :data:`EXIT_SOFTWARE`, the exit status of an internal error."""
    file = sys.stderr if file is None else file
    traceback.print_exception(error, file=file)
    print(f"{prog}: internal error ({type(error).__name__}): this is a bug in pyro_sparsegen, "
          "not a problem with your input; please report it with the traceback above and the "
          "command line", file=file)
    return EXIT_SOFTWARE


def moved(module, name, aliases):
    """The value of a deprecated alias ``module.name`` (``aliases``: ``{old name: (new home
    module, new name)}``), with a ``DeprecationWarning`` naming the new home; for a module's
    ``__getattr__``."""
    import importlib
    import warnings

    if name not in aliases:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    home, new = aliases[name]
    warnings.warn(f"{module}.{name} is deprecated: use {home}.{new}", DeprecationWarning,
                  stacklevel=3)
    return getattr(importlib.import_module(home), new)
