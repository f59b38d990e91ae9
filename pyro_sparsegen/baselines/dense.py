"""The dense ABP baseline: the same model and loop with a constant N(0, I) prior."""

from ..config import TrainConfig


def dense_config(config: TrainConfig, latent_dim=None):
    """A copy of ``config`` with the dense prior (``prior.preset = "dense"``, no explicit
    schedule or overrides), classic ABP's free generator (``network.input_norm = None``: the
    column-norm constraint is the sparse recipe's, and costs a dense model accuracy) and, when
    given, another latent size ("dense, matched budget"). Train it with
    :func:`pyro_sparsegen.train`; ``config`` itself is left unchanged."""
    out = TrainConfig.from_dict(config.to_dict())
    out.prior.preset = "dense"
    out.network.input_norm = None
    out.prior.schedule = out.prior.final_slab_weight = out.prior.spike_scale = None
    out.prior.dense_fraction = out.prior.slab_scale = None
    if latent_dim is not None:
        out.network.latent_dim = latent_dim
    return out.validate()
