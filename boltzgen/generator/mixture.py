"""Several independently trained generators of one molecule as one proposal.

The equal-weight mixture q(x) = (1/K) sum_k q_k(x) of K flows trained on the same data (e.g.
side by side, one per core) is sampled by drawing n/K configurations from each flow and
weighting every draw against the whole mixture,

    log w(x) = -u(x) - log q(x),     log q(x) = logsumexp_k log q_k(x) - log K,

the deterministic-mixture ("balance heuristic") estimator of multiple importance sampling
(Veach & Guibas 1995; Owen & Zhou 2000): unbiased for self-normalised averages, and its
weights are bounded where any one flow covers the Boltzmann density well. Where the flows'
errors are independent, their mixture's log-density error is smaller than each one's, so its
ESS is at least about the mean of theirs and usually above the best one's (measured in
benchmarks/RESULTS.md). Each draw's flow is kept as ``extra["component"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from boltzgen.errors import InputError
from boltzgen.samples import Samples

__all__ = ["mixture_log_prob", "sample_mixture"]


@torch.no_grad()
def mixture_log_prob(generators: Sequence, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """log q(x) (n,) of the equal-weight mixture of ``generators`` at positions ``x``
    (n, n_atoms, 3) nm; -inf where no flow has support."""
    if not generators:
        raise InputError("a mixture needs at least one generator")
    x = np.asarray(x)
    per = np.empty((len(generators), len(x)))
    for k, g in enumerate(generators):
        for s in range(0, len(x), int(batch_size)):
            part = torch.as_tensor(x[s : s + int(batch_size)], dtype=torch.float64)
            per[k, s : s + len(part)] = g.log_prob(part).double().cpu().numpy()
    top = per.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        lse = safe + np.log(np.exp(per - safe).sum(axis=0))
    return np.where(np.isfinite(top), lse - math.log(len(generators)), -np.inf)


def sample_mixture(generators: Sequence, n: int, batch_size: int = 4096) -> Samples:
    """``n`` draws from the equal-weight mixture of ``generators`` (flows of one molecule,
    each with its energy model): n // K from each (the first n % K flows one more), with the
    mixture's log q and log importance weights -u - log q (reduced energies in kT).

    Raises :class:`~boltzgen.errors.InputError` for no generators, ``n`` < the number of
    generators, or generators of different molecules."""
    k = len(generators)
    if k == 0:
        raise InputError("a mixture needs at least one generator")
    if int(n) < k:
        raise InputError(f"draw at least one sample per flow: n={n} < {k} flows")
    atoms = {g.system.n_atoms for g in generators}
    if len(atoms) != 1:
        raise InputError(f"the flows are of different molecules ({sorted(atoms)} atoms)")
    counts = [int(n) // k + (1 if i < int(n) % k else 0) for i in range(k)]
    parts = [g.sample(m, batch_size=batch_size) for g, m in zip(generators, counts, strict=True)]
    s = Samples.concatenate(parts)
    log_q = mixture_log_prob(generators, s.positions, batch_size)
    u = s.reduced_energy
    with np.errstate(invalid="ignore"):
        log_w = np.where(np.isfinite(u) & np.isfinite(log_q), -u - log_q, -np.inf)
    component = np.repeat(np.arange(k), counts)
    return Samples(
        positions=s.positions,
        log_q=log_q,
        reduced_energy=u,
        log_weights=log_w,
        topology=s.topology,
        extra={**s.extra, "component": component},
    )
