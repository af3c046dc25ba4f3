"""Several independently trained generators of one molecule as one proposal.

The mixture q(x) = sum_k a_k q_k(x) of K flows trained on the same data (e.g. side by side,
one per core; equal weights a_k = 1/K by default) is sampled by drawing n a_k configurations
from each flow (the fractional parts spread by systematic sampling, so the expected count is
exactly n a_k) and weighting every draw against the whole mixture,

    log w(x) = -u(x) - log q(x),     log q(x) = logsumexp_k (log a_k + log q_k(x)),

the deterministic-mixture ("balance heuristic") estimator of multiple importance sampling
(Veach & Guibas 1995; Owen & Zhou 2000): unbiased for self-normalised averages, and no draw
weighs more than 1 / a_k times what it would against its own flow k. Since the chi-square divergence
is convex in q, the mixture's ESS (1 / (1 + chi^2(p || q))) is at least the harmonic mean of the
flows' own; where their errors are independent it is higher than the best one's (measured in
benchmarks/RESULTS.md). Finite-sample Kish estimates of a heavy-tailed low-ESS flow are noisy
either way.

:class:`FlowMixture` has the generator's sampling face (``sample``, ``sample_positions``,
``log_prob``, ``energy``, ``system``), so it goes wherever a generator is sampled or refined
(``boltzgen sample a.pt b.pt``, :func:`~boltzgen.refinement.planning.refine_within`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError
from boltzgen.samples import Samples

__all__ = ["FlowMixture", "combine_draws", "sample_mixture"]


class FlowMixture:
    """The mixture of ``generators`` (flows of one molecule) with ``weights`` (default equal;
    normalised here); draws carry the index of their flow as ``extra["component"]``. Energies
    are the first generator's energy model (all are of one molecule)."""

    def __init__(self, generators: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        gens = list(generators)
        if not gens:
            raise InputError("a mixture needs at least one generator")
        atoms = {g.system.n_atoms for g in gens}
        if len(atoms) != 1:
            raise InputError(f"the flows are of different molecules ({sorted(atoms)} atoms)")
        a = np.ones(len(gens)) if weights is None else np.asarray(weights, dtype=float)
        if a.shape != (len(gens),) or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise InputError(f"mixture weights must be {len(gens)} positive numbers, got {weights}")
        self.generators = gens
        self.weights = a / a.sum()

    def __len__(self) -> int:
        return len(self.generators)

    @property
    def system(self):
        return self.generators[0].system

    @property
    def dtype(self) -> torch.dtype:
        return self.generators[0].dtype

    @property
    def dim(self) -> int:
        return self.generators[0].dim

    @property
    def energy(self):
        """The first generator's energy model (reduced energies in kT)."""
        return self.generators[0].energy

    def counts(self, n: int) -> list[int]:
        """Draws per flow for ``n`` in all: floor(n a_k) each, the rest given by systematic
        sampling over the fractional parts (torch's generator), so E[count_k] = n a_k exactly
        and the equal-weight estimator stays unbiased when K does not divide n."""
        if int(n) < 1:
            raise InputError(f"number of samples must be >= 1, got {n}")
        share = int(n) * self.weights
        base = np.floor(share).astype(int)
        left = share - base
        extra = int(n) - int(base.sum())
        if extra:
            u = float(torch.rand(()))
            edges = np.concatenate([[0.0], np.cumsum(left)])
            hits = np.searchsorted(edges, u + np.arange(extra), side="right") - 1
            base += np.bincount(np.clip(hits, 0, len(base) - 1), minlength=len(base))
        return base.tolist()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) (B,) of the mixture at positions x (B, n_atoms, 3) nm, differentiable;
        -inf where no flow has support."""
        x = torch.as_tensor(x)
        per = torch.stack([g.log_prob(x).to(torch.float64) for g in self.generators])
        log_a = torch.as_tensor(np.log(self.weights), dtype=torch.float64)[:, None]
        return torch.logsumexp(per + log_a, dim=0)

    def sample_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, n_atoms, 3) nm, log q(x) (n,)) drawn flow by flow (see :meth:`counts`)."""
        counts = self.counts(n)
        xs = [g.sample_positions(m)[0] for g, m in zip(self.generators, counts, strict=True) if m]
        x = torch.cat([v.to(torch.float64) for v in xs])
        return x, self.log_prob(x)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        batch_size: int = 4096,
        energies: bool = True,
        refine: bool | dict[str, Any] | None = None,
    ) -> Samples:
        """``n`` draws (see :meth:`counts`) with the mixture's log q, reduced energies (kT) and
        log weights -u - log q; ``refine`` as in
        :meth:`~boltzgen.generator.model.BoltzmannGenerator.sample`."""
        if refine:
            from boltzgen.generator.model import refined_draws

            return refined_draws(self, n, batch_size, refine)
        counts = self.counts(n)
        parts = [
            g.sample(m, batch_size=batch_size, energies=False)
            for g, m in zip(self.generators, counts, strict=True)
            if m
        ]
        s = Samples.concatenate(parts)
        if energies:  # one energy model for all the flows' draws (they are of one molecule)
            b = int(batch_size)
            x = torch.as_tensor(s.positions, dtype=torch.float64)
            s.reduced_energy = torch.cat(
                [self.energy(x[i : i + b]).detach() for i in range(0, len(x), b)]
            ).numpy()
        return self._weighted(s, np.repeat(np.arange(len(counts)), counts), batch_size)

    @torch.no_grad()
    def weigh(self, parts: Sequence[Samples | None], batch_size: int = 4096) -> Samples:
        """Draws of the flows (``parts[k]`` drawn from flow k, or None for none) as one sample
        of this mixture: its log q at every draw and log weights -u - log q (nan where the
        energies were not evaluated)."""
        if len(parts) != len(self.generators):
            raise InputError(f"{len(parts)} sample sets for {len(self.generators)} flows")
        have = [(k, p) for k, p in enumerate(parts) if p is not None and len(p)]
        if not have:
            raise InputError("no draws to weigh")
        component = np.repeat([k for k, _ in have], [len(p) for _, p in have])
        return self._weighted(Samples.concatenate([p for _, p in have]), component, batch_size)

    def _weighted(self, s: Samples, component: np.ndarray, batch_size: int) -> Samples:
        """``s`` (the flows' draws, ``component[i]`` the flow of draw i) with the mixture's
        log q and log weights -u - log q (nan where u is)."""
        log_q = np.concatenate(
            [
                self.log_prob(torch.as_tensor(s.positions[i : i + int(batch_size)])).numpy()
                for i in range(0, len(s), int(batch_size))
            ]
        )
        u = s.reduced_energy
        with np.errstate(invalid="ignore"):
            log_w = np.where(np.isfinite(u) & np.isfinite(log_q), -u - log_q, -np.inf)
        log_w[np.isnan(u)] = np.nan
        return Samples(
            positions=s.positions,
            log_q=log_q,
            reduced_energy=u,
            log_weights=log_w,
            topology=s.topology,
            extra={**s.extra, "component": component},
        )


def sample_mixture(generators: Sequence[Any], n: int, batch_size: int = 4096) -> Samples:
    """``n`` weighted draws of the equal-weight mixture of ``generators``
    (:meth:`FlowMixture.sample`)."""
    return FlowMixture(generators).sample(n, batch_size)


def combine_draws(generators: Sequence[Any], parts: Sequence[Samples]) -> Samples:
    """Draws already made, ``parts[k]`` from ``generators[k]`` (energies evaluated), as one
    sample of the flows' mixture weighted by their numbers of draws (the deterministic-mixture
    estimator for those counts)."""
    return FlowMixture(generators, [max(len(p), 1e-300) for p in parts]).weigh(list(parts))
