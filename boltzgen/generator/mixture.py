"""Several independently trained generators of one molecule as one proposal.

The equal-weight mixture q(x) = (1/K) sum_k q_k(x) of K flows trained on the same data (e.g.
side by side, one per core) is sampled by drawing n/K configurations from each flow and
weighting every draw against the whole mixture,

    log w(x) = -u(x) - log q(x),     log q(x) = logsumexp_k log q_k(x) - log K,

the deterministic-mixture ("balance heuristic") estimator of multiple importance sampling
(Veach & Guibas 1995; Owen & Zhou 2000): unbiased for self-normalised averages, and no draw
weighs more than K times what it would against its own flow. Since the chi-square divergence
is convex in q, the mixture's ESS (1 / (1 + chi^2(p || q))) is at least the harmonic mean of the
flows' own; where their errors are independent it is higher than the best one's (measured in
benchmarks/RESULTS.md). Finite-sample Kish estimates of a heavy-tailed low-ESS flow are noisy
either way.

:class:`FlowMixture` has the generator's sampling face (``sample``, ``sample_positions``,
``log_prob``, ``energy``, ``system``), so it goes wherever a generator is sampled or refined
(``boltzgen sample a.pt b.pt``, :func:`~boltzgen.refinement.planning.refine_within`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError
from boltzgen.samples import Samples

__all__ = ["FlowMixture", "sample_mixture"]


class FlowMixture:
    """The equal-weight mixture of ``generators`` (flows of one molecule); draws carry the
    index of their flow as ``extra["component"]``. Energies are the first generator's energy
    model (all are of one molecule)."""

    def __init__(self, generators: Sequence[Any]) -> None:
        gens = list(generators)
        if not gens:
            raise InputError("a mixture needs at least one generator")
        atoms = {g.system.n_atoms for g in gens}
        if len(atoms) != 1:
            raise InputError(f"the flows are of different molecules ({sorted(atoms)} atoms)")
        self.generators = gens

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
        """Draws per flow for ``n`` in all: n // K each, the first n % K flows one more."""
        k = len(self.generators)
        if int(n) < k:
            raise InputError(f"draw at least one sample per flow: n={n} < {k} flows")
        return [int(n) // k + (1 if i < int(n) % k else 0) for i in range(k)]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) (B,) of the mixture at positions x (B, n_atoms, 3) nm, differentiable;
        -inf where no flow has support."""
        x = torch.as_tensor(x)
        per = torch.stack([g.log_prob(x).to(torch.float64) for g in self.generators])
        return torch.logsumexp(per, dim=0) - math.log(len(self.generators))

    def sample_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, n_atoms, 3) nm, log q(x) (n,)) drawn flow by flow (see :meth:`counts`)."""
        xs = [
            g.sample_positions(m)[0] for g, m in zip(self.generators, self.counts(n), strict=True)
        ]
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
            g.sample(m, batch_size=batch_size, energies=energies)
            for g, m in zip(self.generators, counts, strict=True)
        ]
        s = Samples.concatenate(parts)
        log_q = np.concatenate(
            [
                self.log_prob(torch.as_tensor(s.positions[i : i + int(batch_size)])).numpy()
                for i in range(0, len(s), int(batch_size))
            ]
        )
        u = s.reduced_energy
        if energies:
            with np.errstate(invalid="ignore"):
                log_w = np.where(np.isfinite(u) & np.isfinite(log_q), -u - log_q, -np.inf)
        else:
            log_w = np.full(len(s), np.nan)
        return Samples(
            positions=s.positions,
            log_q=log_q,
            reduced_energy=u,
            log_weights=log_w,
            topology=s.topology,
            extra={**s.extra, "component": np.repeat(np.arange(len(counts)), counts)},
        )


def sample_mixture(generators: Sequence[Any], n: int, batch_size: int = 4096) -> Samples:
    """``n`` weighted draws of the equal-weight mixture of ``generators``
    (:meth:`FlowMixture.sample`)."""
    return FlowMixture(generators).sample(n, batch_size)
