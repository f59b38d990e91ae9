"""Posterior sparsity and code usage, analysed with ArviZ.

Three rooms, data flowing one way:

- :mod:`~pyro_sparsegen.diagnostics.inference_data` builds an :class:`arviz.InferenceData`:
  :func:`sample_posterior` draws replica chains per image with
  :class:`~pyro_sparsegen.ShortRunLangevin` (all chains of all images in one tensor) with
  named dims ``chain, draw, image, latent``; :func:`pyro_dims`,
  :func:`add_inclusion_probability` and :func:`add_kernel_stats` complete ``az.from_pyro``'s.
- :mod:`~pyro_sparsegen.diagnostics.metrics` reduces it: xarray in, xarray out (sparsity per
  image, code and class usage, Jaccard overlap, convergence). They reduce first (to one number
  per image, per dimension or per class) and only then summarise, so nothing loops over the
  scalars of a large posterior.
- :mod:`~pyro_sparsegen.diagnostics.report` lays the numbers out (:func:`summary_tables`) and
  runs the whole pipeline (:func:`analyze`), writing every file atomically.

A coordinate ``z_j`` is *active* ``by="magnitude"`` when ``|z_j| > threshold``
(:data:`~pyro_sparsegen.distributions.ACTIVE_THRESHOLD`, 0.2, the authors' choice) and
``by="inclusion"`` when its posterior slab probability is included
(:func:`~pyro_sparsegen.distributions.is_included`: at least 0.5).

Every public name of the three rooms is importable from here. Example::

    >>> idata = sample_posterior(model, x, labels=y, chains=4, draws=200)
    >>> image_sparsity(idata).inactive_inclusion.mean().item()
    >>> class_jaccard(idata).mean_off_diagonal.item()
"""

from .inference_data import (IMAGE_DIMS, add_inclusion_probability, add_kernel_stats,
                             mcmc_chain_statistics, model_attrs, pyro_dims, sample_posterior,
                             sampler_name)
from .metrics import (BY, MIN_USAGE, REDUCTIONS, RHAT_LIMIT, activation_probability, active,
                      class_active_sets, class_jaccard, class_usage, code_usage, convergence,
                      convergence_verdict, dead_dimensions, image_sparsity, inactive_fraction,
                      jaccard, top_dimensions)
from .report import (DEAD_USAGE, QUANTILES, ReportMetrics, analyze, format_number,
                     markdown_table, report_metrics, summary_tables)

__all__ = [
    "BY", "DEAD_USAGE", "IMAGE_DIMS", "MIN_USAGE", "QUANTILES", "REDUCTIONS", "RHAT_LIMIT",
    "ReportMetrics", "activation_probability", "active", "add_inclusion_probability",
    "add_kernel_stats", "analyze", "class_active_sets", "class_jaccard", "class_usage",
    "code_usage", "convergence", "convergence_verdict", "dead_dimensions", "format_number",
    "image_sparsity", "inactive_fraction", "jaccard", "markdown_table", "mcmc_chain_statistics",
    "model_attrs", "pyro_dims", "report_metrics", "sample_posterior", "sampler_name",
    "summary_tables", "top_dimensions",
]
