"""The functional core of short-run Langevin dynamics: pure functions on batched tensors.

A position has two blocks:

- ``position``: ``[*replicas, chains, dim]``, one chain per element of the model's chain plate
  (one per image), the chains independent given the global block;
- ``global_position``: ``[*replicas, gdim]`` (``gdim`` may be 0), the global block: latents
  outside the plate, shared by the chains of a replica.

A *density function* ``density_fn(position, global_position) -> Density`` evaluates the log
density and its gradients (:mod:`pyro_sparsegen.infer.target` builds one from a Pyro model). A
transition is Metropolis-within-Gibbs: a Langevin step of every chain's block (each chain accepts or
rejects on its own), an optional *crossing* move of one scale-mixture coordinate per chain,
then a Langevin step of the global block. A Langevin step is

    z' = z + P * (h * grad + delta * eps),    h = delta^2 / 2,  eps ~ N(0, I)

with ``P = 1`` (explicit) or ``P = 1 / (1 + h * kappa)`` (``precondition=True``: the
semi-implicit prior step, ``kappa`` the prior's secant curvature on scale-mixture coordinates).
Without noise it is gradient ascent on the log density (MAP); with noise and no Metropolis
correction, the unadjusted Langevin algorithm (ULA, biased: on ``N(0, s^2)`` its stationary
variance is ``s^2 / (1 - delta^2 / (4 s^2))``); with ``log_u`` the Metropolis-adjusted one
(MALA, exact).

Random inputs are arguments (:class:`Randoms`, drawn by :func:`draw_randoms`), so a transition
is a deterministic function of its inputs: the kernel derives a graph of it once, and a compiled
step draws the same numbers as the eager one.
"""

import math
from typing import NamedTuple, Optional

import torch

MAX_ENERGY_ERROR = 1000.0  # nats; a larger fall of the log density in one step is a divergence
#: The pair move's other-side pick: one coordinate with ``|z| > PAIR_CUT`` (in the slab), one
#: at or under it (the package's active threshold, where a unit slab and a narrow spike cross;
#: any fixed cut keeps the move exact, this one makes it useful).
PAIR_CUT = 0.2


class Density(NamedTuple):
    """Log density terms at a position and their gradients.

    - ``local``: ``[*R, N]`` the terms of each chain's own sites (prior, likelihood,
      Jacobians); given the global block, chain ``n``'s conditional log density
    - ``shared``: ``[*R]`` the terms of the sites outside the chain plate
    - ``observed``: ``[*R, N]`` the observed part of ``local`` (its log-likelihood)
    - ``grad``: ``[*R, N, D]`` gradient of the total log density w.r.t. ``position``
    - ``grad_global``: ``[*R, G]`` gradient w.r.t. ``global_position``
    - ``curvature``: ``[*R, N, D]`` secant curvature ``-d log p(z) / z / dz`` of the
      scale-mixture coordinates (0 elsewhere), or ``None``
    - ``curvature_global``: ``[*R, G]`` or ``None``
    - ``log_scale_ratio``: ``[*R, N, D]`` ``log(slab scale / spike scale)`` of the
      scale-mixture coordinates (0 elsewhere), for the crossing move, or ``None``
    - ``grad_observed``: ``[*R, N, D]`` gradient of ``observed`` w.r.t. ``position``, kept
      by a tempered density (``None`` otherwise)

    A *tempered* density at inverse temperature ``beta`` (``[*R, N]``, see
    :mod:`pyro_sparsegen.infer.tempering`) has ``local = prior + beta * observed`` and ``grad``
    its gradient, with ``observed`` and ``grad_observed`` untempered: moving a state to
    another ``beta'`` adds ``(beta' - beta)`` times them, by arithmetic, without the model.
    """

    local: torch.Tensor
    shared: torch.Tensor
    observed: torch.Tensor
    grad: torch.Tensor
    grad_global: torch.Tensor
    curvature: Optional[torch.Tensor] = None
    curvature_global: Optional[torch.Tensor] = None
    log_scale_ratio: Optional[torch.Tensor] = None
    grad_observed: Optional[torch.Tensor] = None


class LangevinState(NamedTuple):
    """What the next transition needs: the position's two blocks and the density there."""

    position: torch.Tensor  # [*R, N, D]
    global_position: torch.Tensor  # [*R, G]
    density: Density

    @property
    def glob(self):
        """The former name of :attr:`global_position`."""
        return self.global_position

    @property
    def log_density(self):
        """``[*R, N]``: each chain's conditional log density (``density.local``)."""
        return self.density.local


class LangevinInfo(NamedTuple):
    """What a user may want to look at after a transition."""

    accept_prob: torch.Tensor  # [*R, N] of the chains' Langevin step
    accepted: torch.Tensor  # [*R, N]
    diverging: torch.Tensor  # [*R, N] any move of the transition diverged for this chain
    global_accept_prob: torch.Tensor  # [*R] of the global step (1 without one)
    crossing_accepted: torch.Tensor  # [*R, N] the crossing move was accepted
    pair_accepted: Optional[torch.Tensor] = None  # [*R, N] the pair move was accepted


class Randoms(NamedTuple):
    """The random numbers of one transition (``None``: that part is off)."""

    eps: Optional[torch.Tensor] = None  # [*R, N, D] noise of the chains' step
    log_u: Optional[torch.Tensor] = None  # [*R, N] log-uniforms of its Metropolis test
    cross_index: Optional[torch.Tensor] = None  # [*R, N] int64 coordinate of the crossing move
    cross_up: Optional[torch.Tensor] = None  # [*R, N] bool: towards the slab (else the spike)
    cross_log_u: Optional[torch.Tensor] = None  # [*R, N]
    eps_global: Optional[torch.Tensor] = None  # [*R, G]
    log_u_global: Optional[torch.Tensor] = None  # [*R]
    pair_first: Optional[torch.Tensor] = None  # [*R, N] int64 coordinates the pair move swaps
    pair_second: Optional[torch.Tensor] = None  # [*R, N] int64
    pair_log_u: Optional[torch.Tensor] = None  # [*R, N]
    # an independent draw from the target replaces the Langevin proposal of the rows it marks
    # (tempering: the levels at beta = 0, whose target is the prior; see local_step)
    fresh: Optional[torch.Tensor] = None  # [*R, N, D]
    fresh_rows: Optional[torch.Tensor] = None  # [*R, N] bool
    # the pair move's second pick from the other side of |z| = PAIR_CUT (see draw_randoms)
    pair_opposite: Optional[torch.Tensor] = None  # [*R, N] bool: this transition's pick
    pair_scores: Optional[torch.Tensor] = None  # [*R, N, P] uniforms; -1 off the first's site
    pair_index: Optional[torch.Tensor] = None  # [P] int64 positions in dim of the candidates
    # the pair move's learned branch (where not pair_opposite, once a pick is learned): the
    # mass transfer z_j += shift, z_k -= shift, or where pair_cross is +-1 the compensated
    # crossing (see pair_step), instead of the swap
    pair_shift: Optional[torch.Tensor] = None  # [*R, N]
    pair_cross: Optional[torch.Tensor] = None  # [*R, N] -1, 0 or 1


class Options(NamedTuple):
    """The static settings of a transition (a derived graph is built for one set of them)."""

    noise: bool = True
    metropolis: bool = False
    precondition: bool = False  # the semi-implicit prior step
    crossing: bool = False
    max_energy_error: float = MAX_ENERGY_ERROR
    pairs: bool = False  # the pair move between scale-mixture coordinates
    tempered: bool = False  # the density takes an inverse temperature per chain


def langevin_init(position, density_fn, global_position=None):
    """The state at ``position`` (``[*R, N, D]``) and ``global_position`` (``[*R, G]``,
    default empty)."""
    if global_position is None:
        global_position = position.new_zeros(position.shape[:-2] + (0,))
    return LangevinState(position, global_position, density_fn(position, global_position))


def draw_randoms(state, options, mixture_index=None, has_global=None, pair_sites=None,
                 pair_pick=None):
    """:class:`Randoms` for one transition from ``state`` (the torch global generator).

    :param mixture_index: int64 ``[M]`` positions in ``dim`` of the scale-mixture coordinates,
        among which the crossing move picks one per chain.
    :param pair_sites: ``(index, start, size)``, int64 ``[P]`` each: the positions in ``dim``
        of the coordinates the pair move may swap and, for each, where its site's entries
        begin in ``index`` and how many there are. The move picks one coordinate ``j``
        uniformly; then, with probability 1/2 each, a second uniformly among the other
        coordinates of ``j``'s site, or uniformly among those of its site on the other side
        of ``|z| = PAIR_CUT`` from ``z_j`` at the time of the move (``j`` itself when there
        is none): one in the slab, one in the spike, the swap that moves an explanation
        from one twin to the other. Both picks are symmetric (the second because swapping
        the two values leaves the number on each side unchanged), so their mixture is.
    :param pair_pick: ``(cdf, scale)``, each ``[N, P * P]`` over the ordered pairs ``(j,
        k)`` (row-major over the candidates of ``pair_sites``) per element of the chain plate
        (learned in warm-up, :class:`~pyro_sparsegen.infer.adaptation.PairPick`), or ``None``.
        When given, the uniform branch draws a pair from ``cdf`` and makes, with probability
        1/2 each, a *mass transfer* ``z_j += t, z_k -= t`` with ``t ~ N(0, scale_jk^2)`` (a
        walk along the ridge where two near-duplicate columns explain the image by their
        sum; the pick and the scales do not depend on the state and are symmetric, so the
        move ``(j, k, t)`` is the move ``(k, j, -t)`` with the same probability, Jacobian 1)
        or, with ``options.crossing``, a *compensated crossing* (``z_k`` to the other
        component by ``rho^(+-1)``, ``z_j`` keeping their sum: :func:`pair_step`).
    """
    z = state.position
    lead = z.shape[:-1]
    eps = torch.randn_like(z) if options.noise else None
    log_u = _log_uniform(lead, z) if options.metropolis else None
    cross = (None, None, None)
    if options.crossing and mixture_index is not None and mixture_index.numel():
        pick = torch.randint(mixture_index.numel(), lead, device=z.device)
        cross = (mixture_index[pick], torch.rand(lead, device=z.device, dtype=z.dtype) < 0.5,
                 _log_uniform(lead, z))
    g = state.global_position
    has_global = g.shape[-1] > 0 if has_global is None else has_global
    eps_g = torch.randn_like(g) if has_global and options.noise else None
    log_u_g = _log_uniform(g.shape[:-1], g) if has_global and options.metropolis else None
    pair, opposite, learned = (None, None, None), (None, None, None), (None, None)
    if options.pairs and pair_sites is not None and pair_sites[0].numel():
        pair, opposite, learned = _draw_pair(lead, z, *pair_sites, pick=pair_pick,
                                             crossing=options.crossing)
    return Randoms(eps, log_u, *cross, eps_g, log_u_g, *pair, None, None, *opposite, *learned)


def _draw_pair(lead, like, index, start, size, pick=None, crossing=False):
    """``((first, second, log_u), (opposite, scores, index), (shift, cross))`` of the pair
    move. The uniform second pick: ``P(j, k) = 1 / (M (m - 1))`` with ``m`` the size of their
    site, the same for ``(k, j)``. The other-side pick is made in :func:`pair_step` from
    ``scores`` (uniforms on ``j``'s site, -1 elsewhere), where it sees the state the move
    starts from; its first coordinate ``j`` stays uniform (its symmetry needs that). With
    ``pick`` (``(cdf, scale)``) the other branch's ordered pair is drawn from ``cdf``, its
    transfer's shift from ``N(0, scale^2)`` and, with ``crossing``, half of those moves are
    compensated crossings (``cross`` +-1, else 0); without, ``(shift, cross)`` are ``None``."""
    j = torch.randint(index.numel(), lead, device=like.device)
    m = size[j]
    offset = (torch.rand(lead, device=like.device, dtype=like.dtype) * (m - 1)).long()
    k = start[j] + (j - start[j] + 1 + offset.clamp(max=(m - 2).clamp(min=0))) % m
    opposite = torch.rand(lead, device=like.device, dtype=like.dtype) < 0.5
    same_site = start == start[j].unsqueeze(-1)  # [*lead, P]
    scores = torch.where(same_site, torch.rand(same_site.shape, device=like.device,
                                               dtype=like.dtype), -1.0)
    if pick is None:
        return (index[j], index[k], _log_uniform(lead, like)), (opposite, scores, index), \
            (None, None)
    cdf, scale = pick  # one searchsorted per element of the chain plate over its rows
    p, n = index.numel(), cdf.shape[0]
    u = torch.rand(lead, device=like.device, dtype=cdf.dtype)
    flat = torch.searchsorted(cdf, u.reshape(-1, n).transpose(0, 1).contiguous()) \
        .clamp(max=p * p - 1)  # [N, rows]
    sd = scale.gather(-1, flat).transpose(0, 1).reshape(lead).to(like.dtype)
    flat = flat.transpose(0, 1).reshape(lead)
    first = torch.where(opposite, j, flat // p)
    second = torch.where(opposite, k, flat % p)
    shift = torch.randn(lead, device=like.device, dtype=like.dtype) * sd
    log_u = _log_uniform(lead, like)
    cross = torch.zeros_like(shift)
    if crossing:
        coin = torch.randint(4, lead, device=like.device)  # 0, 1: the transfer
        cross = torch.where(coin == 2, 1.0, torch.where(coin == 3, -1.0, 0.0)).to(like.dtype)
    return (index[first], index[second], log_u), (opposite, scores, index), (shift, cross)


def _log_uniform(shape, like):
    return torch.rand(shape, dtype=like.dtype, device=like.device).log()


def _proposal(z, grad, curvature, step_size, eps, precondition, with_scale=True):
    """``(proposal, mean, scale)``; ``step_size`` a number or a tensor broadcasting to ``z``
    (``scale`` is ``None`` when not ``with_scale``: a noise-free step needs none)."""
    h = 0.5 * step_size * step_size
    if precondition and curvature is not None:
        denominator = 1.0 + h * curvature  # P = 1 / denominator
        mean = z + h * grad / denominator
        if not with_scale:
            return mean, mean, None
        scale = step_size / denominator
    else:
        mean = z + h * grad
        scale = step_size
    return (mean if eps is None else mean + scale * eps), mean, scale


def _log_q(value, mean, scale, preconditioned):
    """``log N(value; mean, scale^2)`` summed over the last dim, dropping the terms that
    cancel between a move and its reverse (``log scale`` does unless ``preconditioned``)."""
    out = ((value - mean) / scale).pow(2).sum(-1) * -0.5
    return out - scale.log().sum(-1) if preconditioned else out


def _log_q_forward(eps, scale, preconditioned):
    """:func:`_log_q` of ``mean + scale * eps`` (the residual is ``eps``)."""
    out = eps.pow(2).sum(-1) * -0.5
    return out - scale.log().sum(-1) if preconditioned else out


def _preconditioned(precondition, curvature):
    return precondition and curvature is not None


def _ok(new_value, old_value, grad_sum, max_energy_error):
    """A move is sound when the new log density and its gradient (``grad_sum``, summed to the
    shape of the value) are finite and the log density fell by less than
    ``max_energy_error``. (NaN compares False.)"""
    return torch.isfinite(new_value + grad_sum) & (new_value > old_value - max_energy_error)


def _select(keep, new, old):
    """Per-chain select between two :class:`Density` (``keep``: ``[*R, N]`` or ``[*R]``)."""
    def pick(a, b, rank):
        if a is None:
            return None
        k = keep.reshape(keep.shape + (1,) * (a.dim() - rank))
        return torch.where(k, a, b)

    r = keep.dim()
    if r == new.local.dim():  # per chain: the shared terms cannot change with one chain
        shared = new.shared
        grad_global = new.grad_global
        curvature_global = new.curvature_global
    else:
        shared = pick(new.shared, old.shared, r)
        grad_global = pick(new.grad_global, old.grad_global, r)
        curvature_global = pick(new.curvature_global, old.curvature_global, r)
    return Density(pick(new.local, old.local, r), shared, pick(new.observed, old.observed, r),
                   pick(new.grad, old.grad, r), grad_global, pick(new.curvature, old.curvature, r),
                   curvature_global, pick(new.log_scale_ratio, old.log_scale_ratio, r),
                   pick(new.grad_observed, old.grad_observed, r))


def _metropolis(ok, log_density_ratio, current, proposal, new_grad, new_curvature, step, eps,
                scale, precondition, curvature, log_u):
    """The Metropolis test of a Langevin move of one block (the chains' or the global one):
    ``(accept_prob, accepted)``. ``log_density_ratio`` is ``log p(proposal) - log p(current)``;
    the proposal densities are of the move from ``current`` (noise ``eps``, ``scale``) and of
    its reverse from ``proposal`` (its gradient and curvature). Unadjusted (``log_u`` is
    ``None``): every sound move is accepted."""
    if log_u is None:
        return ok.to(log_density_ratio.dtype), ok
    pre = _preconditioned(precondition, curvature)
    _, reverse_mean, reverse_scale = _proposal(proposal, new_grad, new_curvature, step, None,
                                               precondition)
    log_ratio = (log_density_ratio + _log_q(current, reverse_mean, reverse_scale, pre)
                 - _log_q_forward(eps, scale, pre))
    log_ratio = torch.where(ok, log_ratio, torch.full_like(log_ratio, -math.inf))
    return log_ratio.clamp(max=0.0).exp(), log_u < log_ratio


def local_step(state, density_fn, step_size, eps=None, log_u=None, *, precondition=False,
               max_energy_error=MAX_ENERGY_ERROR, fresh=None, fresh_rows=None):
    """The chains' Langevin step, given the global block.

    :param step_size: a number or ``[*R, N]`` (one per chain).
    :param eps: ``[*R, N, D]`` noise, or ``None`` for the noise-free (MAP) step.
    :param log_u: ``[*R, N]`` log-uniforms for the Metropolis test, or ``None`` (unadjusted).
    :param fresh: ``[*R, N, D]`` independent draws from the target of the rows ``fresh_rows``
        (``[*R, N]`` bool) marks: there they are the proposal, accepted when sound (an
        independence proposal from the target itself has Metropolis ratio 1: a Gibbs move).
        Tempering uses it at ``beta = 0``, where the target is the prior.
    :return: ``(state, accept_prob, accepted, diverging)``
    """
    step = step_size.unsqueeze(-1) if isinstance(step_size, torch.Tensor) else step_size
    z, d = state.position, state.density
    proposal, _, scale = _proposal(z, d.grad, d.curvature, step, eps, precondition,
                                   with_scale=eps is not None)
    if fresh is not None:
        proposal = torch.where(fresh_rows.unsqueeze(-1), fresh, proposal)
    new = density_fn(proposal, state.global_position)
    ok = _ok(new.local, d.local, new.grad.sum(-1), max_energy_error)
    accept_prob, accepted = _metropolis(ok, new.local - d.local, z, proposal, new.grad,
                                        new.curvature, step, eps, scale, precondition,
                                        d.curvature, log_u)
    if fresh is not None:  # a draw from the target: sound is enough (no energy bound either)
        sound = torch.isfinite(new.local + new.grad.sum(-1))
        accepted = torch.where(fresh_rows, sound, accepted)
        accept_prob = torch.where(fresh_rows, sound.to(accept_prob.dtype), accept_prob)
        ok = torch.where(fresh_rows, sound, ok)
    position = torch.where(accepted.unsqueeze(-1), proposal, z)
    return LangevinState(position, state.global_position, _select(accepted, new, d)), \
        accept_prob, accepted, ~ok


def crossing_step(state, density_fn, index, up, log_u, *, max_energy_error=MAX_ENERGY_ERROR):
    """A Metropolis jump of one scale-mixture coordinate per chain between spike and slab:
    ``z_j' = z_j * rho^(+-1)`` with ``rho`` the slab-to-spike scale ratio (``index``: ``[*R,
    N]`` coordinates, ``up``: towards the slab). The scaling is an involution with its reverse
    (the reverse move picks the same coordinate and the other direction, each with the same
    probability), so accepting with ``min(1, p(z') / p(z) * rho^(+-1))`` (the Jacobian) keeps
    the posterior exactly.

    :return: ``(state, accepted, diverging)``
    """
    z, d = state.position, state.density
    sign = torch.where(up, 1.0, -1.0).to(z.dtype)
    log_rho = d.log_scale_ratio.gather(-1, index.unsqueeze(-1)).squeeze(-1) * sign
    current = z.gather(-1, index.unsqueeze(-1))
    proposal = z.scatter(-1, index.unsqueeze(-1), current * log_rho.exp().unsqueeze(-1))
    return _jump(state, density_fn, proposal, log_u, log_rho)


def _jump(state, density_fn, proposal, log_u, log_jacobian=0.0):
    """Accept or reject, per chain, a deterministic involution's ``proposal`` (the crossing and
    pair moves) with ``min(1, p(z') / p(z) * |J|)``: ``(state, accepted, diverging)``."""
    z, d = state.position, state.density
    new = density_fn(proposal, state.global_position)
    # A jump between the modes may lower the density a lot: a rejection, not a divergence
    # (only a non-finite density or gradient is one).
    ok = _ok(new.local, d.local, new.grad.sum(-1), math.inf)
    accepted = ok & (log_u < new.local - d.local + log_jacobian)
    position = torch.where(accepted.unsqueeze(-1), proposal, z)
    return LangevinState(position, state.global_position, _select(accepted, new, d)), accepted, ~ok


def pair_step(state, density_fn, first, second, log_u, opposite=None, scores=None,
              index=None, shift=None, cross=None):
    """A Metropolis move that swaps the values of two scale-mixture coordinates of one chain
    (``first``, ``second``: ``[*R, N]`` positions in ``dim``), e.g. one twin of a pair of
    near-duplicate dictionary columns for the other, which moves of one coordinate at a time
    cannot do. The swap is an involution with Jacobian 1 and the pick symmetric
    (:func:`draw_randoms`), so accepting with ``min(1, p(z') / p(z))`` keeps the target
    exactly. ``first == second`` leaves the chain where it is.

    :param opposite: ``[*R, N]`` bool, with ``scores`` ``[*R, N, P]`` and ``index`` ``[P]``
        (:class:`Randoms`): where set, ``second`` is replaced by the candidate of highest
        score on the other side of ``|z| = PAIR_CUT`` from ``z[first]`` (``first`` when there
        is none): a uniform pick among them, made from the state the move starts from.
    :param shift: ``[*R, N]``: where ``opposite`` is not set, the move is the mass transfer
        ``z[first] += shift, z[second] -= shift`` instead of the swap (a translation: Jacobian
        1; symmetric, see :func:`draw_randoms`)...
    :param cross: ``[*R, N]`` in ``{-1, 0, 1}``: ...or, where it is not 0, the compensated
        crossing: ``z[second]`` scaled by ``rho^cross`` (``rho`` its slab-to-spike scale
        ratio, as the crossing move) and ``z[first]`` takes up the difference, so that their
        sum (what twin columns' images depend on) stays; the reverse move is the same pair
        with ``-cross``, the Jacobian ``rho^cross``.
    :return: ``(state, accepted, diverging)``
    """
    z = state.position
    if opposite is not None:
        candidates = z.gather(-1, index.expand(z.shape[:-1] + index.shape)).abs() > PAIR_CUT
        side = z.gather(-1, first.unsqueeze(-1)).abs() > PAIR_CUT
        best = torch.where(candidates != side, scores, -1.0).max(-1)
        other = torch.where(best.values >= 0, index[best.indices], first)
        second = torch.where(opposite, other, second)
    i, j = first.unsqueeze(-1), second.unsqueeze(-1)
    proposal = z.scatter(-1, i, z.gather(-1, j)).scatter(-1, j, z.gather(-1, i))
    if shift is None:
        return _jump(state, density_fn, proposal, log_u)
    t = shift.unsqueeze(-1)
    learned = z.scatter_add(-1, i, t).scatter_add(-1, j, -t)  # the transfer
    log_jacobian = 0.0
    ratio = state.density.log_scale_ratio
    if cross is not None and ratio is not None:  # the compensated crossing
        log_rho = ratio.gather(-1, j).squeeze(-1) * cross
        value = z.gather(-1, j)
        moved = value * log_rho.exp().unsqueeze(-1)
        compensated = z.scatter(-1, j, moved).scatter_add(-1, i, value - moved)
        learned = torch.where((cross != 0).unsqueeze(-1), compensated, learned)
        log_jacobian = torch.where(opposite, 0.0, log_rho)
    proposal = torch.where(opposite.unsqueeze(-1), proposal, learned)
    return _jump(state, density_fn, proposal, log_u, log_jacobian)


def global_step(state, density_fn, step_size, eps=None, log_u=None, *, precondition=False,
                max_energy_error=MAX_ENERGY_ERROR):
    """The global block's Langevin step on the total log density (per replica), given the
    chains' blocks.

    :param step_size: a number or ``[*R]``.
    :return: ``(state, accept_prob, diverging)``, the last two ``[*R]``
    """
    step = step_size.unsqueeze(-1) if isinstance(step_size, torch.Tensor) else step_size
    g, d = state.global_position, state.density
    total = d.local.sum(-1) + d.shared
    proposal, _, scale = _proposal(g, d.grad_global, d.curvature_global, step, eps,
                                   precondition, with_scale=eps is not None)
    new = density_fn(state.position, proposal)
    new_total = new.local.sum(-1) + new.shared
    ok = _ok(new_total, total, new.grad_global.sum(-1) + new.grad.sum((-2, -1)),
             max_energy_error)
    accept_prob, accepted = _metropolis(ok, new_total - total, g, proposal, new.grad_global,
                                        new.curvature_global, step, eps, scale, precondition,
                                        d.curvature_global, log_u)
    global_position = torch.where(accepted.unsqueeze(-1), proposal, g)
    return LangevinState(state.position, global_position, _select(accepted, new, d)), \
        accept_prob, ~ok


def langevin_step(state, density_fn, step_size, randoms=None, options=Options(), *,
                  global_step_size=None, mixture_index=None, pair_sites=None):
    """One transition: the chains' step, the crossing move (``options.crossing``), the pair
    move (``options.pairs``), then the global step (when the global block is not empty).

    :param step_size: a number or ``[*R, N]``.
    :param randoms: :class:`Randoms`; drawn here when ``None``.
    :param global_step_size: a number or ``[*R]`` (default ``step_size`` when a number).
    :return: ``(LangevinState, LangevinInfo)``
    """
    if options.metropolis and not options.noise:
        raise ValueError("metropolis=True needs noise=True")
    if randoms is None:
        randoms = draw_randoms(state, options, mixture_index, pair_sites=pair_sites)
    state, accept_prob, accepted, diverging = local_step(
        state, density_fn, step_size, randoms.eps, randoms.log_u,
        precondition=options.precondition, max_energy_error=options.max_energy_error,
        fresh=randoms.fresh, fresh_rows=randoms.fresh_rows)
    crossed = torch.zeros_like(accepted)
    if randoms.cross_index is not None:
        state, crossed, cross_div = crossing_step(
            state, density_fn, randoms.cross_index, randoms.cross_up, randoms.cross_log_u,
            max_energy_error=options.max_energy_error)
        diverging = diverging | cross_div
    paired = None
    if randoms.pair_first is not None:
        state, paired, pair_div = pair_step(state, density_fn, randoms.pair_first,
                                            randoms.pair_second, randoms.pair_log_u,
                                            randoms.pair_opposite, randoms.pair_scores,
                                            randoms.pair_index, randoms.pair_shift,
                                            randoms.pair_cross)
        diverging = diverging | pair_div
    global_accept = accept_prob.new_ones(accept_prob.shape[:-1])
    if state.global_position.shape[-1] > 0:
        if options.metropolis:
            # The chains accepted or rejected one by one, so the state's global gradient (a sum
            # over chains, evaluated with every chain moved) is re-evaluated at the position
            # the chains kept; a noise-free (MAP) step keeps it (it differs only where a chain
            # diverged).
            state = LangevinState(state.position, state.global_position,
                                  density_fn(state.position, state.global_position))
        if global_step_size is None:
            global_step_size = step_size
        state, global_accept, global_div = global_step(
            state, density_fn, global_step_size, randoms.eps_global, randoms.log_u_global,
            precondition=options.precondition, max_energy_error=options.max_energy_error)
        diverging = diverging | global_div.unsqueeze(-1)
    return state, LangevinInfo(accept_prob, accepted, diverging, global_accept, crossed, paired)


def density_from_log_prob(log_prob_fn, curvature_fn=None):
    """A density function for the core from ``log_prob_fn(position) -> [*R, N]`` (no global
    block), with the gradient by autograd; ``curvature_fn(position) -> [*R, N, D]`` optional.
    For tests and for users of the core on plain tensors."""

    def density(position, global_position):
        with torch.enable_grad():
            z = position.detach().requires_grad_(True)
            value = log_prob_fn(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        value = value.detach()
        curvature = None if curvature_fn is None else curvature_fn(position)
        zeros = value.new_zeros(value.shape[:-1])
        return Density(value, zeros, torch.zeros_like(value), grad,
                       global_position.new_zeros(global_position.shape), curvature, None, None,
                       None)

    return density
