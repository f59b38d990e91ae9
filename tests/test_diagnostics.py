"""The package :mod:`pyro_sparsegen.diagnostics`: each public name of its rooms is importable
from the package itself (the names the single module had before the split included)."""

import pytest

from pyro_sparsegen import diagnostics
from pyro_sparsegen.diagnostics import inference_data, metrics, report

ROOMS = {
    inference_data: ("IMAGE_DIMS", "model_attrs", "pyro_dims", "add_inclusion_probability",
                     "sample_posterior", "sampler_name", "add_kernel_stats",
                     "mcmc_chain_statistics"),
    metrics: ("BY", "MIN_USAGE", "active", "inactive_fraction", "activation_probability",
              "image_sparsity", "code_usage", "class_usage", "dead_dimensions",
              "class_active_sets", "jaccard", "class_jaccard", "top_dimensions", "convergence",
              "RHAT_LIMIT", "REDUCTIONS", "convergence_verdict"),
    report: ("QUANTILES", "DEAD_USAGE", "ReportMetrics", "report_metrics", "format_number",
             "markdown_table", "summary_tables", "analyze"),
}


@pytest.mark.parametrize("room", ROOMS, ids=lambda room: room.__name__.rsplit(".", 1)[1])
def test_every_public_name_is_the_rooms_own(room):
    for name in ROOMS[room]:
        assert getattr(diagnostics, name) is getattr(room, name), name
        assert name in diagnostics.__all__, name
