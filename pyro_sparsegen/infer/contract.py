"""The ``pyro.infer.MCMC`` side of :class:`~pyro_sparsegen.ShortRunLangevin`: Pyro's
``MCMCKernel`` contract (``setup``, ``sample``, ``logging``, ``diagnostics``, ``cleanup``), one
transition per ``sample()`` with the kernel's own step-size adaptation in warm-up."""

from collections import OrderedDict

import numpy as np
import pyro
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from .core import draw_randoms

LOG_EVERY = 10  # transitions between refreshes of the progress bar's figures


class MCMCContract(MCMCKernel):
    """The ``MCMCKernel`` methods of :class:`~pyro_sparsegen.ShortRunLangevin` (which supplies
    ``target``, ``transition``, ``_start``, ``_step_sizes``, ``_adaptation``, ``_adapted`` and
    ``_reset``)."""

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def setup(self, warmup_steps, *args, **kwargs):
        if self.tempering is not None:
            raise ValueError("tempering runs in ShortRunLangevin.sample_chains (its ladders are "
                             "replica rows), not under pyro.infer.MCMC: use sample_chains or "
                             "tempering=None")
        self._reset()
        self._warmup_steps = warmup_steps
        target = self.target(args, kwargs)
        dyn = self.transition(target, args, kwargs)
        self.transforms = target.transforms
        self._mcmc = (target, dyn)
        if self._initial_params is None:
            init = self.init or ("zeros" if self.potential_fn is not None else "prior")
            with pyro.validation_enabled(False):
                self._initial_params = target.unpack_free(*self.start_position(target, init, args,
                                                                       kwargs))

    def _begin_chain(self, params):
        target, dyn = self._mcmc
        position, global_position = target.pack_free({k: v.detach() for k, v in params.items()},
                                          replicas=0)
        state = dyn.start(position, global_position)
        if self._steps is None:
            self._steps = self.initial_step_sizes(target, dyn, state)
            if self._warmup_steps > 0:
                self._adapt = self.step_size_adaptation(self._steps)
        return state

    def sample(self, params):
        target, dyn = self._mcmc
        state = self._state
        if state is None or params is not self._returned:
            state = self._begin_chain(params)
        randoms = draw_randoms(state, dyn.options, target.mixture_index, target.global_size > 0,
                               getattr(target, "pair_sites", None))
        state, info = dyn.step(state, randoms, *self._steps)
        self._t += 1
        if self._t <= self._warmup_steps:
            if self._adapt is not None:
                self._adapt, self._steps = self.adapt_step_sizes(
                    self._adapt, info, final=self._t == self._warmup_steps)
        else:
            self._draws.append((info.accept_prob, info.diverging, self._steps[0]))
        self._refresh_logging(info)
        self._state = state
        self._returned = target.unpack_free(state.position, state.global_position)
        return self._returned

    def _refresh_logging(self, info):
        """Cached figures for the progress bar, a few transitions stale: on a GPU they come
        through a non-blocking copy, never a synchronisation."""
        if self._t % LOG_EVERY != 1 and self._t > 1:
            return
        figures = torch.stack([info.accept_prob.mean(), self._steps[0].mean()]).detach()
        if self._host is not None:
            host, event = self._host
            if event is None or event.query():
                self._accept_mean, self._step_mean = (float(v) for v in host)
        if figures.is_cuda:
            host = torch.empty(2, dtype=figures.dtype, pin_memory=True)
            host.copy_(figures, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._host = (host, event)
        else:
            self._accept_mean, self._step_mean = (float(v) for v in figures)
            self._host = None

    def logging(self):
        return OrderedDict([("step size", f"{self._step_mean:.2e}"),
                            ("acc. prob", f"{self._accept_mean:.3f}")])

    def diagnostics(self):
        """``divergences`` (post-warm-up draws where any chain diverged), ``acceptance rate``,
        and per draw and chain ``accept_prob``, ``step_size`` and ``diverging`` (NumPy
        ``[draws, chains]``; :func:`pyro_sparsegen.diagnostics.add_kernel_stats` puts them
        into ``az.from_pyro``'s InferenceData). Also appended to
        :attr:`~pyro_sparsegen.infer.kernel.ShortRunLangevin.chain_stats`."""
        if self._draws:
            accept = torch.stack([a for a, _, _ in self._draws]).detach().cpu().numpy()
            diverging = torch.stack([d for _, d, _ in self._draws]).cpu().numpy()
            steps = torch.stack([s for _, _, s in self._draws]).detach().cpu().numpy()
        else:
            accept = steps = np.zeros((0, 0))
            diverging = np.zeros((0, 0), dtype=bool)
        flags = diverging.any(-1) if diverging.size else np.zeros(0, dtype=bool)
        out = {"divergences": [int(i) for i in np.flatnonzero(flags)],
               "acceptance rate": float(accept.mean()) if accept.size else float("nan"),
               "accept_prob": accept, "step_size": steps, "diverging": diverging}
        self.chain_stats.append(out)
        return out

    def cleanup(self):
        self._reset()
        self._initial_params = None
