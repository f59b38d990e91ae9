"""Sphinx configuration: Markdown pages (myst-parser), the furo theme, the API from docstrings.

Build (no network; warnings are errors; every reference must resolve)::

    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

The modules of the API reference are listed in one place, ``docs/api.md``.
"""

import builtins
import importlib
import os
import re
import shutil
import sys
import types

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # document this checkout, not some installed copy

import pyro_sparsegen  # noqa: E402

project = "pyro_sparsegen"
author = "pyro_sparsegen authors"
copyright = "pyro_sparsegen authors"
release = pyro_sparsegen.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"pyro_sparsegen {release}"
html_static_path = []

# Markdown: anchors for "page.md#section" links, so a broken one fails the build too.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The API pages: docs/api.md's toctree is the one list of documented modules; a page
# docs/api/<module>.rst is generated here for each entry at every build (the folder is cleared
# first, so a module dropped from the list leaves no stale page behind). A module's page
# documents its members; a package's page its docstring and what it re-exports, each name
# linking to the one place it is documented (the module that defines it).
HERE = os.path.dirname(os.path.abspath(__file__))
API_FOLDER = os.path.join(HERE, "api")


def _api_page(name):
    module = importlib.import_module(name)
    lines = [name, "=" * len(name), "", f".. automodule:: {name}"]
    if not hasattr(module, "__path__"):
        return lines + ["   :members:", "   :ignore-module-all:", "   :show-inheritance:", ""]
    public = sorted(getattr(module, "__all__", []), key=str.lower)
    modules = [n for n in public if isinstance(getattr(module, n), types.ModuleType)]
    # constants have no defining module to link to: documented here, with their values
    values = [n for n in public if n not in modules and _defined_at(getattr(module, n)) is None]
    objects = [n for n in public if n not in modules and n not in values]
    for heading, role, names in (("Modules", "py:mod", modules), ("Names", "py:obj", objects)):
        if names:
            lines += ["", heading, "-" * len(heading), ""]
            lines += [f"- :{role}:`~{name}.{n}`" for n in names]
    if values:
        lines += ["", "Constants", "---------", ""]
        lines += [f".. autodata:: {name}.{n}" for n in values]
    return lines + [""]


def _write_api_pages():
    with open(os.path.join(HERE, "api.md"), encoding="utf-8") as f:
        names = re.findall(r"^api/(pyro_sparsegen[\w.]*)\s*$", f.read(), re.MULTILINE)
    shutil.rmtree(API_FOLDER, ignore_errors=True)
    os.makedirs(API_FOLDER)
    for name in names:
        with open(os.path.join(API_FOLDER, f"{name}.rst"), "w", encoding="utf-8") as f:
            f.write("\n".join(_api_page(name)))


autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
# The docstrings use Sphinx's own ``:param:`` field lists, so neither napoleon nor numpydoc.

# ----- references -------------------------------------------------------------------------
# nitpicky: every cross-reference must resolve (sphinx-build -n), and the build never reaches
# the network (no intersphinx). References to other packages' objects are not checked; this
# is the stated list of what is exempt, one regex per external package prefix, plus Python's
# builtins and standard library. A reference to ``pyro_sparsegen...`` is in none of them, so a
# broken one fails the build.
nitpicky = True
EXTERNAL_PACKAGES = [
    "torch", "pyro", "arviz", "az", "numpy", "np", "xarray", "xr", "h5py", "matplotlib",
    "sklearn", "skimage", "scipy", "mlxtend", "tqdm", "PIL",
]
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(EXTERNAL_PACKAGES)})(\..+)?"),
    # the standard library, by its own list of module names; qualified names only, so that a
    # bare name of this package's (a method called ``copy``) is never taken for a module
    (r"py:.*", rf"({'|'.join(sorted(sys.stdlib_module_names))})\..+"),
]
_BUILTIN_TYPES = [n for n in dir(builtins) if isinstance(getattr(builtins, n), type)]
_BUILTIN_FUNCTIONS = [n for n in dir(builtins) if not n.startswith("_")
                      and type(getattr(builtins, n)) is types.BuiltinFunctionType]
nitpick_ignore = [
    *[(role, n) for n in _BUILTIN_TYPES for role in ("py:class", "py:exc", "py:obj")],
    *[("py:func", n) for n in _BUILTIN_FUNCTIONS],
    *[(role, n) for n in ("None", "True", "False", "Ellipsis", "NotImplemented")
      for role in ("py:obj", "py:data", "py:class")],
    # short names in docstrings this package's classes inherit from torch and Pyro
    # (``nn.Module.forward``, ``TorchDistributionMixin.expand``, ``MCMCKernel.logging``)
    ("py:class", "Module"),
    ("py:class", "ExpandedDistribution"),
    ("py:class", "string"),
]


def _defined_at(obj):
    """Where ``obj`` is defined (``module.qualname``), or ``None`` for a plain value."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        return f"{module}.{qualname}"
    return None


def _canonical(name):
    """The canonical dotted name of what ``name`` imports as, or ``None`` if it does not import.

    ``pyro_sparsegen.SpikeAndSlab`` -> ``pyro_sparsegen.distributions.SpikeAndSlab``: a
    re-exported object is documented once, where it is defined.
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        canonical = obj.__name__
        for attr in parts[split:]:
            try:
                owner, obj = obj, getattr(obj, attr)
            except AttributeError:
                return None
            if isinstance(owner, type):  # an inherited member: where the MRO finds it
                owner = next((k for k in owner.__mro__ if attr in vars(k)), owner)
                canonical = _defined_at(owner)
            canonical = _defined_at(obj) or f"{canonical}.{attr}"
        return canonical
    return None


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    # a reference resolves the way Python resolves the name where it is written: absolute, or
    # in the current class, or in the current module (a name that module imports)
    target, module, cls = node["reftarget"], node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module and not target.startswith("pyro_sparsegen."):
        candidates = ([f"{module}.{cls}.{target}"] if cls else []) + [f"{module}.{target}"]
    domain = env.get_domain("py")
    for candidate in candidates:
        canonical = _canonical(candidate)
        if canonical is None or not canonical.startswith("pyro_sparsegen.") or (
                canonical == target):
            continue
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                    canonical, node, contnode)
        if found is not None:
            return found
    return None


def setup(app):
    _write_api_pages()
    app.connect("missing-reference", _resolve_reexport)
