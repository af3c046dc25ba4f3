r"""Annealed refinement of proposal samples toward the Boltzmann distribution (SMC / AIS).

``refine(samples, energy, log_q=gen.log_prob)`` moves draws of a proposal q (a Boltzmann
generator's flow) toward the target p(x) ∝ exp(-u(x)) (u = reduced energy, kT) through the
tempered densities

    log pi_b(x) = (1 - b) log q(x) - b u(x),        0 = b_0 < b_1 < ... < b_K = 1,

and returns weighted samples of the target together with an estimate of log Z, Z = ∫ exp(-u).

Algorithm (a sequential Monte Carlo sampler with tempering: Neal 2001 "Annealed importance
sampling"; Del Moral, Doucet & Jasra 2006; adaptive tempering as in Zhou, Johansen & Aston
2016). N particles x_i ~ q start with log-weight 0. For level k = 1..K:

1. *Reweight*: ``log w_i += (b_k - b_{k-1}) r(x_i)`` with ``r = -u - log q`` (the log of
   pi_k / pi_{k-1} up to constants), evaluated at the particles produced at level k-1.
2. *Resample* (systematic) when the Kish ESS fraction of the weights drops below
   ``resample_threshold`` (or holds a dead particle). The particles form ``n_islands`` fixed groups (islands) that are
   resampled separately: within an island, particles are copied in proportion to their weights
   and every log-weight is set to the log of the island's *mean* weight, so the island's Z
   estimate (its mean weight) is unchanged.
3. *Move*: ``n_steps`` sweeps of a Markov kernel that leaves pi_{b_k} invariant.

Why the weights are unbiased. The move at level k leaves pi_k invariant, so by the extended
state-space argument of AIS the product of incremental ratios pi_k(x_{k-1}) / pi_{k-1}(x_{k-1})
has expectation Z_K / Z_0 = ∫ exp(-u) dx / ∫ q dx = Z (q is normalized). Resampling with
weights reset to their mean keeps the estimator ``Z_hat = mean_i exp(log w_i)`` unbiased
(standard SMC; Del Moral 2004), and ``sum_i W_i f(x_i)`` (W = normalized final weights) is a
consistent estimate of E_p[f]. Returned: ``log_weights`` = the final log w (equal within an
island after a final resampling), ``log_z = log Z_hat`` (Z_hat is unbiased for Z, so log Z_hat
is biased low by about err^2 / 2) and ``log_z_err``, the relative standard error of Z_hat
estimated from the spread of the islands' estimates (independent SMC runs given the schedule;
"island particle models", Vergé et al. 2015). A genealogy-based estimate (Lee & Whiteley 2018)
was tried and rejected: it assumes multinomial resampling and underestimates the error, down
to zero, with systematic resampling. Without any resampling the island spread estimates the
same quantity as the importance sampling formula ``sqrt((1/ESS - 1) / N)`` of
:func:`boltzgen.analysis.log_partition`. With the adaptive schedule (the default) the levels
are chosen from all particles together, which adds an O(1/N) bias and a weak dependence
between islands, as usual for adaptive SMC. Particles that descend from one input particle
are correlated: errors of reweighted observables should resample islands or ancestors
(``extra["island"]``, ``extra["ancestor"]`` of :class:`RefinedSamples`), not particles.

Which Z. ``Z`` is relative to the measure on which q is a normalized density. For a
:class:`~boltzgen.generator.model.BoltzmannGenerator` with ``rigid="remove"`` that is the
Cartesian space modulo rigid-body motion: ``Z`` is the configurational integral divided by the
rigid-body volume 8 pi^2 V (see :mod:`boltzgen.generator.model`). The constant cancels from
weights, ESS and free-energy differences.

Markov kernel. Hamiltonian Monte Carlo in the positions as given (nm for molecules), identity
mass matrix, ``n_leapfrog`` leapfrog steps with the step size jittered by +-20 % per particle
and sweep (``kernel="hmc"``), or MALA (``kernel="mala"``: identical to HMC with one leapfrog
step and no jitter). The Metropolis test uses pi_b exactly; the gradient only steers the
proposal: leapfrog with *any* deterministic vector field is volume preserving and reversible,
so a non-finite gradient (or an energy that autograd cannot differentiate) is replaced by zero
without breaking invariance. Points where pi_b = 0 (u = +inf, e.g. clashes; or log q = -inf,
outside the flow's support, for b < 1) are rejected; at b = 1 only u matters and log q is not
evaluated during the moves. The step size is adapted after every sweep from the population's
mean acceptance probability (toward ``target_acceptance``: 0.6 for MALA, 0.7 for HMC) and
carried over to the next level; a sweep's step size depends only on earlier sweeps, so each
sweep is an exact pi_b-invariant kernel given it. When pi_b is invariant under rigid-body
motion (``rigid="remove"``), the moves also let the molecule drift and rotate slowly; every
observable of a rigid-invariant density is unaffected.

Invalid particles. A start point with u = ±inf / nan, log q = -inf / +inf / nan, or non-finite
positions gets log w = -inf (as in :class:`~boltzgen.samples.Samples`), is never moved or
evaluated again, and disappears at the next resampling. Weights are never NaN.

Cost. ``n_energy_evals`` counts configurations passed to ``energy`` (one call computes value
and gradient): N at the start, then per level and sweep one per leapfrog step and live
particle. Dead particles and trajectories that left the support are not evaluated.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from boltzgen.analysis import kish_ess, log_mean_exp
from boltzgen.errors import InputError, ShapeError
from boltzgen.jsonable import json_clean
from boltzgen.samples import Samples

__all__ = ["RefinedSamples", "SMCResult", "predicted_levels", "refine", "systematic_resample"]

log = logging.getLogger(__name__)

_KERNELS = {"hmc": 0.7, "mala": 0.6}  # kernel -> default target acceptance
_JITTER = 0.2  # HMC step size jitter (fraction)
_ADAPT_GAIN = 1.5  # log step size += gain * (acceptance - target) after each sweep


# ----------------------------------------------------------------------------- results
def _ess_fraction(log_w: np.ndarray) -> float:
    return kish_ess(log_w) if np.isfinite(log_w).any() else float("nan")


@dataclass
class SMCResult:
    """Refined weighted samples of an arbitrary-shape state (returned for array input).

    Attributes:
        positions: (N, ...) float64, the particles.
        log_q: (N,) log q at the particles; reduced_energy: (N,) u at the particles.
        log_weights: (N,) final SMC log-weights (mean exp = Z estimate; -inf = dead particle).
        log_z, log_z_err: log Z estimate and its standard error.
        n_energy_evals: configurations passed to the energy (value + gradient per call).
        history: per-level diagnostics, see :func:`refine`.
    """

    positions: np.ndarray
    log_q: np.ndarray
    reduced_energy: np.ndarray
    log_weights: np.ndarray
    log_z: float
    log_z_err: float
    n_energy_evals: int
    history: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.log_weights)

    @property
    def ess(self) -> float:
        """Kish effective sample size of the final weights as a fraction in (0, 1]."""
        return _ess_fraction(self.log_weights)

    @property
    def n_eff(self) -> float:
        return self.ess * len(self)

    @property
    def normalized_weights(self) -> np.ndarray:
        from boltzgen.analysis import normalized_weights

        return normalized_weights(self.log_weights)


@dataclass
class RefinedSamples(Samples):
    """:class:`~boltzgen.samples.Samples` after refinement, with the SMC estimates.

    It is a ``Samples`` (``to_mdtraj``, ``free_energy_difference``, ... work unchanged); the
    log-weights are the final SMC weights and ``extra["ancestor"]`` is each particle's original
    index (its "Eve" in the input). :meth:`save` also stores ``log_z``, ``log_z_err``,
    ``n_energy_evals`` and ``history``; :meth:`load` reads them back (``Samples.load`` reads
    the file as plain samples). Subsets (``r[idx]``) keep these fields unchanged, although
    log Z describes the whole population.
    """

    log_z: float = float("nan")
    log_z_err: float = float("nan")
    n_energy_evals: int = 0
    history: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Any) -> Path:
        import tables

        path = super().save(path)
        meta = {
            "log_z": self.log_z,
            "log_z_err": self.log_z_err,
            "n_energy_evals": int(self.n_energy_evals),
            "history": self.history,
        }
        blob = np.frombuffer(
            json.dumps(json_clean(meta, finite_only=False)).encode(), dtype=np.uint8
        )
        with tables.open_file(str(path), "a") as h:
            h.create_array("/", "boltzgen_refine", obj=blob)
        return path

    @classmethod
    def load(cls, path: Any) -> RefinedSamples:
        import tables

        out = super().load(path)
        with tables.open_file(str(path), "r") as h:
            if "/boltzgen_refine" in h:
                meta = json.loads(bytes(h.get_node("/boltzgen_refine")[:]).decode())
                out.log_z = float(meta["log_z"])
                out.log_z_err = float(meta["log_z_err"])
                out.n_energy_evals = int(meta["n_energy_evals"])
                out.history = meta["history"]
        return out


# ----------------------------------------------------------------------------- helpers
def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: (N,) ancestor indices for (N,) normalized weights (one uniform)."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    points = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(cdf, points, side="right"), n - 1)


def _cess(log_w: np.ndarray, r: np.ndarray, db: float) -> float:
    """Conditional ESS fraction (sum W e^{db r})^2 / sum W e^{2 db r} for normalized W."""
    a = log_w + db * r
    return float(np.exp(2.0 * logsumexp(a) - logsumexp(a + db * r) - logsumexp(log_w)))


def _next_beta(b: float, log_w: np.ndarray, r: np.ndarray, target: float) -> float:
    """Largest b' in (b, 1] with conditional ESS >= target (bisection)."""
    alive = np.isfinite(log_w)
    lw, rr = log_w[alive], r[alive]
    hi = 1.0 - b
    if _cess(lw, rr, hi) >= target:
        return 1.0
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _cess(lw, rr, mid) >= target:
            lo = mid
        else:
            hi = mid
    return min(1.0, b + max(lo, 1e-12))


def predicted_levels(
    log_ratios: np.ndarray, cess_target: float = 0.8, max_levels: int = 200
) -> int:
    """Levels the adaptive schedule would take if the moves did not change the particles.

    ``log_ratios`` (N,) = -u - log q of the draws (their importance log-weights; -inf for
    invalid ones). Moves usually raise the overlap, so this is an upper estimate; used to
    plan how many particles a budget of energy evaluations can refine.
    """
    r = np.asarray(log_ratios, dtype=np.float64)
    r = np.where(np.isfinite(r), r, -np.inf)
    if not np.isfinite(r).any():
        return 1
    lw = np.where(np.isfinite(r), 0.0, -np.inf)
    b, k = 0.0, 0
    while b < 1.0 and k < max_levels:
        b_new = _next_beta(b, lw, r, cess_target)
        lw = lw + (b_new - b) * r
        b, k = b_new, k + 1
    return k


def _fixed_schedule(schedule: Any, n_levels: int) -> np.ndarray:
    """The nonzero betas (increasing, ending at 1) of a fixed schedule."""
    if isinstance(schedule, str):
        k = int(n_levels)
        if k < 1:
            raise InputError(f"n_levels must be >= 1, got {n_levels}")
        if schedule == "linear":
            return np.linspace(0.0, 1.0, k + 1)[1:]
        if schedule == "geometric":
            return np.geomspace(max(1e-3, 2.0 ** -(k - 1)), 1.0, k) if k > 1 else np.ones(1)
        raise InputError(
            f"schedule must be 'adaptive', 'linear', 'geometric' or a sequence of betas, "
            f"got {schedule!r}"
        )
    betas = np.asarray(schedule, dtype=np.float64).reshape(-1)
    betas = betas[betas > 0.0]
    if (
        len(betas) == 0
        or not np.all(np.diff(betas) > 0)
        or not math.isclose(betas[-1], 1.0)
        or not np.isfinite(betas).all()
    ):
        raise InputError(
            f"a schedule must be increasing betas in (0, 1] ending at 1, got {schedule}"
        )
    betas[-1] = 1.0
    return betas


def _island_rel_err(log_w: np.ndarray, island: np.ndarray, n_islands: int) -> float:
    """Relative standard error of Z_hat from the spread of the islands' estimates."""
    if n_islands < 2 or not np.isfinite(log_w).any():
        return float("nan")
    w = np.exp(log_w - np.max(log_w))
    size = np.bincount(island, minlength=n_islands).astype(np.float64)
    z_m = np.bincount(island, weights=w, minlength=n_islands) / size
    z = float(np.sum(size * z_m) / size.sum())
    return float(np.std(z_m, ddof=1) / math.sqrt(n_islands) / z)


class _Evaluator:
    """u, du/dx, log q, dlog q/dx on a batch (in chunks), counting configurations."""

    def __init__(self, energy: Callable, log_q: Callable, batch_size: int | None) -> None:
        self.energy = energy
        self.log_q = log_q
        self.batch_size = None if batch_size is None else int(batch_size)
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.n_energy_evals = 0
        self.n_log_q_evals = 0
        self._warned: set[str] = set()

    def _call(self, fn: Callable, x: torch.Tensor, grad: bool, what: str):
        n = len(x)
        vals = torch.empty(n, dtype=x.dtype)
        grads = torch.zeros_like(x) if grad else None
        bs = self.batch_size or max(n, 1)
        for a in range(0, n, bs):
            xc = x[a : a + bs].detach().clone()
            m = len(xc)
            g = None
            if grad:
                xc.requires_grad_(True)
                with torch.enable_grad():
                    v = self._check(fn(xc), m, what)
                    if v.requires_grad:
                        (g,) = torch.autograd.grad(v.sum(), xc, allow_unused=True)
                    elif what == "energy" and what not in self._warned:
                        self._warned.add(what)
                        warnings.warn(
                            "the energy is not differentiable w.r.t. the positions: the moves "
                            "fall back to random-walk proposals (still exact, but slow)",
                            RuntimeWarning,
                            stacklevel=4,
                        )
            else:
                with torch.no_grad():
                    v = self._check(fn(xc), m, what)
            vals[a : a + m] = v.detach().to(x.dtype)
            if g is not None:
                grads[a : a + m] = g.detach().to(x.dtype)
            if what == "energy":
                self.n_energy_evals += m
            else:
                self.n_log_q_evals += m
        if grads is not None:  # a non-finite gradient steers nothing (see module docstring)
            bad = ~torch.isfinite(grads.reshape(n, -1)).all(dim=1)
            grads[bad] = 0.0
        return vals, grads

    @staticmethod
    def _check(v: Any, m: int, what: str) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        if v.shape != (m,):
            raise ShapeError(
                f"{what} must return shape ({m},) for {m} configurations, got {tuple(v.shape)}"
            )
        return v

    def __call__(self, x: torch.Tensor, need_lq: bool):
        u, gu = self._call(self.energy, x, True, "energy")
        if need_lq:
            lq, glq = self._call(self.log_q, x, True, "log_q")
        else:
            lq, glq = torch.full_like(u, math.nan), torch.zeros_like(x)
        return u, gu, lq, glq

    def log_q_values(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.log_q, x, False, "log_q")[0]


def _log_pi(b: float, u: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """log pi_b (-inf where pi_b = 0 or undefined)."""
    if b >= 1.0:
        valid = torch.isfinite(u)
        lp = -u
    else:
        valid = torch.isfinite(u) & torch.isfinite(lq)
        lp = (1.0 - b) * lq - b * u
    return torch.where(valid, lp, torch.full_like(lp, -math.inf))


def _grad(b: float, gu: torch.Tensor, glq: torch.Tensor) -> torch.Tensor:
    return -gu if b >= 1.0 else (1.0 - b) * glq - b * gu


def _bshape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def _sq(p: torch.Tensor) -> torch.Tensor:
    return (p * p).reshape(len(p), -1).sum(dim=1)


class _State:
    """Particles with their energies, log q and gradients (float64 torch)."""

    def __init__(self, x, u, gu, lq, glq) -> None:
        self.x, self.u, self.gu, self.lq, self.glq = x, u, gu, lq, glq

    def take(self, idx: torch.Tensor) -> None:
        for k in ("x", "u", "gu", "lq", "glq"):
            setattr(self, k, getattr(self, k)[idx])


def _hmc_sweep(
    st: _State,
    alive: torch.Tensor,
    b: float,
    eps: float,
    n_leapfrog: int,
    jitter: float,
    ev: _Evaluator,
    gen: torch.Generator,
    region: tuple[Callable, Any] | None = None,
) -> float:
    """One HMC (n_leapfrog >= 1; MALA for 1) sweep over the live particles, in place.

    ``region = (labels, label)``: proposals with ``labels(x) != label`` are rejected (the
    target is pi_b restricted to the stratum). Returns the mean acceptance probability."""
    ia = torch.nonzero(alive).reshape(-1)
    m = len(ia)
    if m == 0:
        return float("nan")
    x0 = st.x[ia]
    lp0 = _log_pi(b, st.u[ia], st.lq[ia])
    g = _grad(b, st.gu[ia], st.glq[ia])
    e = torch.full((m,), eps, dtype=x0.dtype)
    if jitter > 0:
        e = e * (1.0 + jitter * (2.0 * torch.rand(m, generator=gen, dtype=x0.dtype) - 1.0))
    e = _bshape(e, x0)
    p = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    h0 = -lp0 + 0.5 * _sq(p)
    x = x0.clone()
    u, gu, lq, glq = st.u[ia].clone(), st.gu[ia].clone(), st.lq[ia].clone(), st.glq[ia].clone()
    ok = torch.ones(m, dtype=torch.bool)
    need_lq = b < 1.0
    for _ in range(n_leapfrog):
        p = p + 0.5 * e * g
        x = x + e * p
        j = torch.nonzero(ok).reshape(-1)
        g = torch.zeros_like(x)
        if len(j) == 0:
            break
        u[j], gu[j], lq[j], glq[j] = ev(x[j], need_lq)
        ok[j] = torch.isfinite(_log_pi(b, u[j], lq[j]))
        g[j] = _grad(b, gu[j], glq[j])
        g[~ok] = 0.0
        p = p + 0.5 * e * g
    if region is not None and bool(ok.any()):
        j = torch.nonzero(ok).reshape(-1)
        ok[j] = torch.as_tensor(_labels(region[0], x[j]) == region[1])
    lp1 = _log_pi(b, u, lq)
    log_acc = h0 - (-lp1 + 0.5 * _sq(p))
    log_acc = torch.where(ok & ~torch.isnan(log_acc), log_acc, torch.full_like(log_acc, -math.inf))
    accept = torch.log(torch.rand(m, generator=gen, dtype=x0.dtype)) < log_acc
    acc_prob = torch.exp(torch.clamp(log_acc, max=0.0))
    k = ia[accept]
    st.x[k], st.u[k], st.gu[k], st.lq[k], st.glq[k] = (
        x[accept],
        u[accept],
        gu[accept],
        lq[accept],
        glq[accept],
    )
    return float(acc_prob.mean())


def _result(template, positions, lq, u, lw, log_z, log_z_err, n_evals, hist, extra):
    """SMCResult for array input, RefinedSamples (float32 positions, topology kept) for
    Samples input."""
    if template is None:
        return SMCResult(positions, lq, u, lw, log_z, log_z_err, n_evals, hist)
    return RefinedSamples(
        positions=positions.astype(np.float32),
        log_q=lq,
        reduced_energy=u,
        log_weights=lw,
        topology=template.topology,
        extra=extra,
        log_z=log_z,
        log_z_err=log_z_err,
        n_energy_evals=n_evals,
        history=hist,
    )


def _labels(fn: Callable, x: Any) -> np.ndarray:
    """Stratum labels (N,) of positions x (torch or numpy) as a numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    lab = np.asarray(fn(x))
    if lab.shape != (len(x),):
        raise ShapeError(f"strata(x) must return shape ({len(x)},), got {lab.shape}")
    return lab


def _initial_step(st: _State, alive: torch.Tensor, b: float) -> float:
    """sigma_hat * d^(-1/4) with sigma_hat = sqrt(d / median |grad log pi_b|^2)."""
    g = _grad(b, st.gu[alive], st.glq[alive])
    d = g[0].numel() if len(g) else 1
    g2 = float(torch.median(_sq(g))) if len(g) else 0.0
    if not (g2 > 0.0 and math.isfinite(g2)):
        return 0.1
    return math.sqrt(d / g2) * d**-0.25


# ----------------------------------------------------------------------------- main entry
def refine(
    samples: Any,
    energy: Any,
    log_q: Any = None,
    *,
    n_steps: int = 5,
    schedule: str | Sequence[float] = "adaptive",
    cess_target: float = 0.8,
    n_levels: int = 10,
    max_levels: int = 200,
    resample_threshold: float = 0.5,
    kernel: str = "hmc",
    n_leapfrog: int = 5,
    step_size: float | None = None,
    target_acceptance: float | None = None,
    adapt_step_size: bool = True,
    n_islands: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    strata: Callable[[np.ndarray], np.ndarray] | None = None,
    strata_mass: dict[Any, float] | None = None,
    strata_mass_draws: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    _region: tuple[Callable, Any] | None = None,
) -> RefinedSamples | SMCResult:
    """Refine draws of a proposal q toward p ∝ exp(-u) by annealed SMC (see the module docs).

    Args:
        samples: :class:`~boltzgen.samples.Samples` drawn from q (only the positions are
            used; their log-weights are ignored: the particles are taken as exact draws of q),
            or an array / tensor (N, ...) of such draws (any event shape, e.g. (N, d)).
        energy: callable torch (N, ...) -> (N,) reduced energy u (kT), differentiable by
            autograd (e.g. :class:`~boltzgen.energy.EnergyModel`; +inf = invalid), or a
            :class:`~boltzgen.generator.model.BoltzmannGenerator` (then ``energy=gen.energy``
            and ``log_q`` defaults to ``gen.log_prob``).
        log_q: the proposal's normalized log density, callable torch (N, ...) -> (N,)
            (differentiable; -inf outside its support), or an object with ``log_prob``.
        n_steps: MCMC sweeps per level (0: importance reweighting with resampling only).
        schedule: ``"adaptive"`` (each next b by bisection so that the conditional ESS of the
            incremental weights equals ``cess_target``), ``"linear"`` / ``"geometric"``
            (``n_levels`` levels), or an increasing sequence of betas ending at 1.
        max_levels: adaptive schedule cap; the level that reaches it jumps to b = 1 (warns).
        resample_threshold: resample (systematic) when the Kish ESS fraction falls below it
            (per island).
        n_islands: the particles form this many islands (particle ``i`` in island
            ``i % n_islands``) that resample independently; the spread of the islands' Z
            estimates gives ``log_z_err``. Default min(16, max(2, N // 32)).
        kernel: ``"hmc"`` (``n_leapfrog`` leapfrog steps) or ``"mala"``.
        step_size: initial step (units of the positions, nm); default from the gradient at
            the first level. Adapted toward ``target_acceptance`` after every sweep unless
            ``adapt_step_size=False``.
        batch_size: evaluate energies and log q in chunks of this many configurations.
        seed: seeds the momenta, jitter, Metropolis tests and resampling (deterministic).
        strata: ``strata(positions (N, ...) numpy) -> (N,)`` labels (e.g. the sign pattern
            of the backbone phi angles): *stratified* refinement. Each stratum k (the
            particles with one label) is refined by its own SMC run toward p restricted to
            the stratum (moves that change the label are rejected, which keeps the
            restricted target invariant), so a minor basin keeps its particles instead of
            losing them to resampling against the major one, and every basin gets its own
            schedule. Its run estimates Z_k / q(k) (the particles are draws of q restricted
            to k); the final log-weights add log(q(k) N / N_k), so ``mean exp(log w)``
            estimates Z = sum_k Z_k and the weights are consistent for E_p restricted to
            the union of the strata (mass in strata q never visits is missed, as with any
            importance sampler). ``history["strata"]`` holds each stratum's figures.
        strata_mass: q(k) per label; default N_k / N from the particles themselves. Give
            it from many more (cheap) proposal draws to allocate particles freely across
            strata (e.g. equal numbers per basin); ``strata_mass_draws`` is that number
            of draws, used for the binomial error of q(k) in ``log_z_err``.
        progress: ``progress(fraction, message)`` after every level (fraction = beta; with
            strata, the strata's shares of the particles).

    Returns:
        :class:`RefinedSamples` for Samples input (float32 positions (N, n_atoms, 3), topology
        kept), else :class:`SMCResult`. Both carry ``positions``, ``log_q`` and
        ``reduced_energy`` at the final positions, final ``log_weights``, ``ess`` (Kish
        fraction of the final weights: 1 right after a resampling, so also look at
        ``history["ess"]``), ``log_z``, ``log_z_err``, ``n_energy_evals`` and ``history``:

        * ``betas`` (K + 1, from 0), and per level k = 1..K: ``ess`` (Kish fraction after
          reweighting, before resampling), ``resampled``, ``acceptance`` (mean acceptance
          probability over the level's sweeps), ``step_size`` (at the level's first sweep),
          ``log_z`` (running estimate), ``n_alive``, ``n_energy_evals`` (cumulative);
        * ``ess_is``, ``log_z_is``: plain importance sampling from q with the same
          particles; ``n_resampling``, ``n_unique_ancestors`` (distinct input particles
          with descendants), ``n_log_q_evals``, and the settings used.
    """
    if hasattr(energy, "log_prob") and hasattr(energy, "energy"):  # a BoltzmannGenerator
        if log_q is None:
            log_q = energy.log_prob
        energy = energy.energy
    if log_q is not None and not callable(log_q) and hasattr(log_q, "log_prob"):
        log_q = log_q.log_prob
    if not callable(energy):
        raise InputError(f"energy must be callable, got {type(energy).__name__}")
    if log_q is None or not callable(log_q):
        raise InputError(
            "refine needs the proposal's log density as a callable: log_q=gen.log_prob "
            "(or pass the BoltzmannGenerator itself as the energy)"
        )
    if kernel not in _KERNELS:
        raise InputError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
    n_steps = int(n_steps)
    n_leapfrog = 1 if kernel == "mala" else int(n_leapfrog)
    if n_steps < 0 or n_leapfrog < 1:
        raise InputError(f"need n_steps >= 0 and n_leapfrog >= 1, got {n_steps}, {n_leapfrog}")
    if not 0.0 < cess_target < 1.0:
        raise InputError(f"cess_target must be in (0, 1), got {cess_target}")
    if not 0.0 <= resample_threshold <= 1.0:
        raise InputError(f"resample_threshold must be in [0, 1], got {resample_threshold}")
    target_acc = _KERNELS[kernel] if target_acceptance is None else float(target_acceptance)
    if not 0.0 < target_acc < 1.0:
        raise InputError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    jitter = _JITTER if n_leapfrog > 1 else 0.0
    adaptive = isinstance(schedule, str) and schedule == "adaptive"
    fixed = None if adaptive else _fixed_schedule(schedule, n_levels)

    # ---- particles
    template: Samples | None = samples if isinstance(samples, Samples) else None
    if template is not None:
        x = torch.as_tensor(template.positions, dtype=torch.float64).clone()
    else:
        x = torch.as_tensor(
            samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else samples,
            dtype=torch.float64,
        ).clone()
    if x.dim() < 2 or len(x) < 1:
        raise ShapeError(f"samples must be (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    n = len(x)
    if strata is not None:
        kwargs = dict(
            n_steps=n_steps,
            schedule=schedule,
            cess_target=cess_target,
            n_levels=n_levels,
            max_levels=max_levels,
            resample_threshold=resample_threshold,
            kernel=kernel,
            n_leapfrog=n_leapfrog,
            step_size=step_size,
            target_acceptance=target_acceptance,
            adapt_step_size=adapt_step_size,
            n_islands=n_islands,
            batch_size=batch_size,
        )
        return _refine_stratified(
            x,
            template,
            energy,
            log_q,
            strata,
            strata_mass,
            strata_mass_draws,
            seed,
            kwargs,
            progress,
        )

    ev = _Evaluator(energy, log_q, batch_size)
    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))

    finite_x = torch.isfinite(x.reshape(n, -1)).all(dim=1)
    u = torch.full((n,), math.inf, dtype=torch.float64)
    lq = torch.full((n,), -math.inf, dtype=torch.float64)
    gu, glq = torch.zeros_like(x), torch.zeros_like(x)
    jf = torch.nonzero(finite_x).reshape(-1)
    if len(jf):
        u[jf], gu[jf], lq[jf], glq[jf] = ev(x[jf], True)
    st = _State(x, u, gu, lq, glq)

    def log_ratio() -> np.ndarray:
        with np.errstate(invalid="ignore"):
            r = (-st.u - st.lq).numpy()
        ok = np.isfinite(st.u.numpy()) & np.isfinite(st.lq.numpy()) & np.isfinite(r)
        return np.where(ok, r, -np.inf)

    r = log_ratio()
    lw = np.where(np.isfinite(r), 0.0, -np.inf)
    if not np.isfinite(lw).any():
        raise InputError(
            "no sample has a finite energy and log q: nothing to refine (all weights are zero)"
        )
    if template is not None and np.isfinite(template.log_q).any():
        both = np.isfinite(template.log_q) & np.isfinite(st.lq.numpy())
        if both.any() and np.median(np.abs(template.log_q[both] - st.lq.numpy()[both])) > 0.05:
            warnings.warn(
                "log_q(positions) differs from the samples' stored log_q: is log_q the density "
                "of the proposal that drew these samples?",
                RuntimeWarning,
                stacklevel=2,
            )
    eve = np.arange(n)
    if n_islands is None:
        n_islands = min(16, max(2, n // 32)) if n >= 4 else 1
    n_islands = int(n_islands)
    if not 1 <= n_islands <= n:
        raise InputError(f"n_islands must be in [1, {n}], got {n_islands}")
    island = np.arange(n) % n_islands
    islands = [np.flatnonzero(island == m) for m in range(n_islands)]
    hist: dict[str, Any] = {
        "betas": [0.0],
        "ess": [],
        "resampled": [],
        "acceptance": [],
        "step_size": [],
        "log_z": [],
        "n_alive": [],
        "n_energy_evals": [],
        "ess_is": _ess_fraction(r),
        "log_z_is": float(log_mean_exp(r)),
        "n_invalid_initial": int(n - np.isfinite(r).sum()),
    }

    b, level, n_resampled = 0.0, 0, 0
    eps = None if step_size is None else float(step_size)
    if eps is not None and not (eps > 0 and math.isfinite(eps)):
        raise InputError(f"step_size must be positive, got {step_size}")
    while b < 1.0:
        level += 1
        if adaptive:
            b_new = _next_beta(b, lw, r, cess_target)
            if level >= max_levels and b_new < 1.0:
                warnings.warn(
                    f"adaptive schedule reached max_levels={max_levels} at b={b_new:.3g}; "
                    "jumping to b=1 (still unbiased, but the weights may be degenerate)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                b_new = 1.0
        else:
            b_new = float(fixed[level - 1])
        lw = lw + (b_new - b) * r
        b = b_new
        if not np.isfinite(lw).any():  # cannot happen for finite r; guard anyway
            raise InputError("all particles lost their weight")
        ess = kish_ess(lw)
        idx, n_res = np.arange(n), 0
        for members in islands:
            lw_m = lw[members]
            live = np.isfinite(lw_m)
            # dead particles (weight 0) are replaced at once: they cost nothing but hold slots
            if not live.any() or (live.all() and kish_ess(lw_m) >= resample_threshold):
                continue
            w = np.exp(lw_m - lw_m.max())
            idx[members] = members[systematic_resample(w / w.sum(), rng)]
            lw[members] = log_mean_exp(lw_m)
            n_res += 1
        resampled = n_res > 0
        if resampled:
            st.take(torch.as_tensor(idx))
            eve = eve[idx]
            n_resampled += 1
        alive = torch.as_tensor(np.isfinite(lw))
        if eps is None:
            eps = _initial_step(st, alive, b)
        eps_level, accs = eps, []
        for _ in range(n_steps):
            acc = _hmc_sweep(st, alive, b, eps, n_leapfrog, jitter, ev, gen, _region)
            accs.append(acc)
            if adapt_step_size and math.isfinite(acc):
                eps *= math.exp(_ADAPT_GAIN * (acc - target_acc))
        if b < 1.0:
            r = log_ratio()
            r[~np.isfinite(lw)] = -np.inf
        hist["betas"].append(b)
        hist["ess"].append(ess)
        hist["resampled"].append(n_res)
        hist["acceptance"].append(float(np.mean(accs)) if accs else float("nan"))
        hist["step_size"].append(eps_level)
        hist["log_z"].append(float(log_mean_exp(lw)))
        hist["n_alive"].append(int(np.isfinite(lw).sum()))
        hist["n_energy_evals"].append(ev.n_energy_evals)
        if progress is not None:
            progress(b, f"level {level}: beta {b:.3g}, ESS {ess:.3f}")
        log.info(
            "refine level %d: beta=%.4g ess=%.3f%s acceptance=%.2f step=%.3g",
            level,
            b,
            ess,
            " (resampled)" if resampled else "",
            hist["acceptance"][-1],
            eps_level,
        )

    # ---- log q at the final positions (moves at b = 1 do not evaluate it)
    need = torch.isnan(st.lq) & torch.isfinite(st.x.reshape(n, -1)).all(dim=1)
    j = torch.nonzero(need).reshape(-1)
    if len(j):
        st.lq[j] = ev.log_q_values(st.x[j])
    log_z = float(log_mean_exp(lw))
    log_z_err = _island_rel_err(lw, island, n_islands)
    alive_np = np.isfinite(lw)
    hist.update(
        n_levels=level,
        n_resampling=n_resampled,
        n_unique_ancestors=int(len(np.unique(eve[alive_np]))),
        n_islands=n_islands,
        n_log_q_evals=ev.n_log_q_evals,
        step_size_final=eps,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        n_steps=n_steps,
        schedule=schedule if isinstance(schedule, str) else [float(v) for v in fixed],
        cess_target=cess_target if adaptive else None,
        resample_threshold=resample_threshold,
        target_acceptance=target_acc,
        seed=int(seed),
    )
    positions = st.x.numpy()
    u_out, lq_out = st.u.numpy().copy(), st.lq.numpy().copy()
    if _region is not None:  # a stratum of _refine_stratified, which pops these
        hist["_ancestor"], hist["_island"] = eve, island
    extra = {"ancestor": eve.astype(np.int64), "island": island.astype(np.int64)}
    return _result(
        template, positions, lq_out, u_out, lw, log_z, log_z_err, ev.n_energy_evals, hist, extra
    )


def _refine_stratified(
    x: torch.Tensor,
    template: Samples | None,
    energy: Callable,
    log_q: Callable,
    strata: Callable,
    strata_mass: dict[Any, float] | None,
    mass_draws: int | None,
    seed: int,
    kwargs: dict[str, Any],
    progress: Callable[[float, str], None] | None = None,
) -> RefinedSamples | SMCResult:
    """One SMC run per stratum (see ``strata`` in :func:`refine`), merged."""
    if not callable(strata):
        raise InputError("strata must be a callable positions -> labels")
    n = len(x)
    labels = _labels(strata, x)
    keys, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if strata_mass is None:
        mass = counts / n
        draws = n
    else:
        missing = [k for k in keys if k not in strata_mass]
        if missing:
            raise InputError(f"strata_mass has no entry for the strata {missing}")
        mass = np.array([float(strata_mass[k]) for k in keys])
        if not (np.all(mass > 0) and np.all(np.isfinite(mass)) and mass.sum() <= 1 + 1e-9):
            raise InputError("strata_mass must be positive and sum to at most 1")
        draws = mass_draws
    positions = np.empty(tuple(x.shape), dtype=np.float64)
    lq, u, lw = (np.empty(n) for _ in range(3))
    ancestor = np.empty(n, dtype=np.int64)
    island = np.empty(n, dtype=np.int64)
    rows, z_k, var_k = [], [], []
    n_evals, n_isl, levels = 0, 0, 0
    for k, key in enumerate(keys):
        members = np.flatnonzero(inverse == k)
        sub_kwargs = dict(kwargs)
        if sub_kwargs["n_islands"] is not None:
            sub_kwargs["n_islands"] = min(int(sub_kwargs["n_islands"]), len(members))
        done = float(np.sum(counts[:k])) / n
        share = float(counts[k]) / n

        def sub_progress(f: float, msg: str, done=done, share=share, key=key) -> None:
            if progress is not None:
                progress(done + share * f, f"stratum {key}: {msg}")

        res = refine(
            x[members],
            energy,
            log_q,
            seed=seed + 7919 * k,
            _region=(strata, key),
            progress=sub_progress,
            **sub_kwargs,
        )
        shift = math.log(mass[k] * n / len(members))
        positions[members] = res.positions
        lq[members], u[members] = res.log_q, res.reduced_energy
        lw[members] = res.log_weights + shift
        h = res.history
        ancestor[members] = members[np.asarray(h.pop("_ancestor"))]
        island[members] = np.asarray(h.pop("_island")) + n_isl
        n_isl += h["n_islands"]
        n_evals += res.n_energy_evals
        levels = max(levels, h["n_levels"])
        zk = math.log(mass[k]) + res.log_z  # log Z_k
        rel = res.log_z_err if math.isfinite(res.log_z_err) else 0.0
        rel_mass = math.sqrt((1 - mass[k]) / (mass[k] * draws)) if draws else 0.0
        z_k.append(zk)
        var_k.append(rel**2 + rel_mass**2)
        rows.append(
            {
                "label": json_clean(key),
                "n": int(len(members)),
                "mass": float(mass[k]),
                "log_z": float(zk),
                "log_z_err": float(rel),
                "n_levels": h["n_levels"],
                "ess": float(h["ess"][-1]) if h["ess"] else float("nan"),
                "ess_is": h["ess_is"],
                "acceptance": float(np.nanmean(h["acceptance"])) if h["acceptance"] else None,
                "n_unique_ancestors": h["n_unique_ancestors"],
                "n_energy_evals": int(res.n_energy_evals),
            }
        )
    z_k_arr = np.array(z_k)
    log_z = float(logsumexp(z_k_arr))
    share = np.exp(z_k_arr - log_z)
    log_z_err = float(math.sqrt(np.sum(share**2 * np.array(var_k))))
    # the stratified estimator's variance-equivalent sample size: 1 / sum_k s_k^2 / n_eff_k
    n_eff_k = np.array([max(r["ess"], 1e-12) * r["n"] for r in rows])
    ess = float(1.0 / np.sum(share**2 / n_eff_k) / n)
    hist: dict[str, Any] = {
        "strata": rows,
        "ess": [min(1.0, ess)],
        "acceptance": [r["acceptance"] for r in rows if r["acceptance"] is not None],
        "n_levels": levels,
        "n_unique_ancestors": int(sum(r["n_unique_ancestors"] for r in rows)),
        "n_islands": n_isl,
        "seed": int(seed),
    }
    extra = {"ancestor": ancestor, "island": island, "stratum": inverse.astype(np.int64)}
    return _result(template, positions, lq, u, lw, log_z, log_z_err, n_evals, hist, extra)
