"""What every error message of the package shares. Imports nothing of the package."""


def first_line(error):
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
