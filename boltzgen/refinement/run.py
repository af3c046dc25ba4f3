"""One SMC run, level by level: reweight toward the next beta, resample each island whose ESS
fell, move every live particle with the kernel, record the level (see the package docstring for
why the weights stay unbiased). :func:`smc_settings` checks the settings once;
:class:`SMCRun` holds the particles between levels."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from boltzgen.analysis import kish_ess, log_mean_exp, n_effective
from boltzgen.diagnostics.weights import k_hat
from boltzgen.errors import InputError
from boltzgen.refinement.kernels import (
    JITTER,
    KERNELS,
    Evaluator,
    State,
    hmc_sweep,
    initial_step,
)
from boltzgen.refinement.results import RefinedSamples, SMCResult, ess_fraction, make_result
from boltzgen.refinement.schedule import fixed_schedule, next_beta
from boltzgen.samples import Samples

__all__ = ["SMCRun", "Settings", "smc_settings", "systematic_resample"]

log = logging.getLogger("boltzgen.refinement")

_ADAPT_GAIN = 1.5  # log step size += gain * (acceptance - target) after each sweep


def cut_record(log_w: np.ndarray, beta_from: float) -> dict[str, Any]:
    """What the jump to b = 1 of a refinement stopped at its time limit did to the weights,
    measured before they are resampled (afterwards they read uniform and hide it): the
    inverse temperature it jumped from, the particles with non-zero weight, the jump weights'
    Kish ESS (a count) and their Pareto k-hat (:func:`boltzgen.diagnostics.k_hat`). The
    verdict judges these (:func:`boltzgen.diagnostics.cut_is_degenerate`)."""
    finite = np.isfinite(log_w)
    return {
        "beta_from": float(beta_from),
        "n_particles": int(finite.sum()),
        "ess_count": float(n_effective(log_w)),
        "k_hat": k_hat(log_w),
    }


@dataclass(frozen=True)
class Settings:
    """The checked settings of a run (see :func:`~boltzgen.refinement.refine` for each)."""

    n_steps: int
    schedule: str | Sequence[float]
    fixed: np.ndarray | None  # the betas of a fixed schedule; None: adaptive
    cess_target: float
    max_levels: int
    resample_threshold: float
    kernel: str
    n_leapfrog: int
    jitter: float
    step_size: float | None
    target_acceptance: float
    adapt_step_size: bool
    n_islands: int | None
    batch_size: int | None
    deadline: float | None = None  # time.monotonic() after which the next level jumps to b = 1

    @property
    def adaptive(self) -> bool:
        return self.fixed is None


def smc_settings(
    *,
    n_steps: int,
    schedule: str | Sequence[float],
    cess_target: float,
    n_levels: int,
    max_levels: int,
    resample_threshold: float,
    kernel: str,
    n_leapfrog: int,
    step_size: float | None,
    target_acceptance: float | None,
    adapt_step_size: bool,
    n_islands: int | None,
    batch_size: int | None,
    time_limit: float | None = None,
) -> Settings:
    """:class:`Settings` from :func:`~boltzgen.refinement.refine`'s arguments; a bad one
    raises :class:`InputError` naming it."""
    if kernel not in KERNELS:
        raise InputError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    n_steps = int(n_steps)
    n_leapfrog = 1 if kernel == "mala" else int(n_leapfrog)
    if n_steps < 0 or n_leapfrog < 1:
        raise InputError(f"need n_steps >= 0 and n_leapfrog >= 1, got {n_steps}, {n_leapfrog}")
    if not 0.0 < cess_target < 1.0:
        raise InputError(f"cess_target must be in (0, 1), got {cess_target}")
    if not 0.0 <= resample_threshold <= 1.0:
        raise InputError(f"resample_threshold must be in [0, 1], got {resample_threshold}")
    target_acc = KERNELS[kernel] if target_acceptance is None else float(target_acceptance)
    if not 0.0 < target_acc < 1.0:
        raise InputError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    adaptive = isinstance(schedule, str) and schedule == "adaptive"
    fixed = None if adaptive else fixed_schedule(schedule, n_levels)
    eps = None if step_size is None else float(step_size)
    if eps is not None and not (eps > 0 and math.isfinite(eps)):
        raise InputError(f"step_size must be positive, got {step_size}")
    if time_limit is not None and not time_limit >= 0:
        raise InputError(f"time_limit must be >= 0 seconds, got {time_limit}")
    return Settings(
        n_steps=n_steps,
        schedule=schedule,
        fixed=fixed,
        cess_target=cess_target,
        max_levels=max_levels,
        resample_threshold=resample_threshold,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        jitter=JITTER if n_leapfrog > 1 else 0.0,
        step_size=eps,
        target_acceptance=target_acc,
        adapt_step_size=adapt_step_size,
        n_islands=n_islands,
        batch_size=batch_size,
        deadline=None if time_limit is None else time.monotonic() + float(time_limit),
    )


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: (N,) ancestor indices for (N,) normalized weights (one uniform)."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    points = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(cdf, points, side="right"), n - 1)


def _island_rel_err(log_w: np.ndarray, island: np.ndarray, n_islands: int) -> float:
    """Relative standard error of Z_hat from the spread of the islands' estimates."""
    if n_islands < 2 or not np.isfinite(log_w).any():
        return float("nan")
    w = np.exp(log_w - np.max(log_w))
    size = np.bincount(island, minlength=n_islands).astype(np.float64)
    z_m = np.bincount(island, weights=w, minlength=n_islands) / size
    z = float(np.sum(size * z_m) / size.sum())
    return float(np.std(z_m, ddof=1) / math.sqrt(n_islands) / z)


def _initial_state(x: torch.Tensor, ev: Evaluator) -> State:
    """Energies, log q and gradients at the start points (non-finite positions: u = inf)."""
    n = len(x)
    finite_x = torch.isfinite(x.reshape(n, -1)).all(dim=1)
    u = torch.full((n,), math.inf, dtype=torch.float64)
    lq = torch.full((n,), -math.inf, dtype=torch.float64)
    gu, glq = torch.zeros_like(x), torch.zeros_like(x)
    jf = torch.nonzero(finite_x).reshape(-1)
    if len(jf):
        u[jf], gu[jf], lq[jf], glq[jf] = ev(x[jf], True)
    return State(x, u, gu, lq, glq)


def _check_stored_log_q(template: Samples | None, st: State, stacklevel: int) -> None:
    """Warn when log_q at the positions is not the samples' stored log q."""
    if template is None or not np.isfinite(template.log_q).any():
        return
    both = np.isfinite(template.log_q) & np.isfinite(st.lq.numpy())
    if both.any() and np.median(np.abs(template.log_q[both] - st.lq.numpy()[both])) > 0.05:
        warnings.warn(
            "log_q(positions) differs from the samples' stored log_q: is log_q the density "
            "of the proposal that drew these samples?",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def _island_count(n_islands: int | None, n: int) -> int:
    if n_islands is None:
        n_islands = min(16, max(2, n // 32)) if n >= 4 else 1
    n_islands = int(n_islands)
    if not 1 <= n_islands <= n:
        raise InputError(f"n_islands must be in [1, {n}], got {n_islands}")
    return n_islands


class SMCRun:
    """One SMC run over the particles ``x`` (N, ...) float64 torch: build it (evaluates the
    start points), then :meth:`run`. ``region = (labels, label)`` restricts the moves to a
    stratum. After the run, ``eve`` (N,) is each particle's input index and ``island`` (N,)
    its island."""

    def __init__(
        self,
        x: torch.Tensor,
        template: Samples | None,
        energy: Callable,
        log_q: Callable,
        settings: Settings,
        seed: int,
        *,
        region: tuple[Callable, Any] | None = None,
        progress: Callable[[float, str], None] | None = None,
        stacklevel: int = 2,
    ) -> None:
        self.s, self.template, self.region, self.progress = settings, template, region, progress
        self.seed = int(seed)
        self.stacklevel = stacklevel  # of warnings, counted from SMCRun's caller
        self.n = n = len(x)
        self.ev = Evaluator(energy, log_q, settings.batch_size)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.st = _initial_state(x, self.ev)
        self.r = self._log_ratio()
        self.lw = np.where(np.isfinite(self.r), 0.0, -np.inf)
        if not np.isfinite(self.lw).any():
            raise InputError(
                "no sample has a finite energy and log q: nothing to refine (all weights are zero)"
            )
        _check_stored_log_q(template, self.st, stacklevel + 1)
        self.eve = np.arange(n)
        self.n_islands = _island_count(settings.n_islands, n)
        self.island = np.arange(n) % self.n_islands
        self.islands = [np.flatnonzero(self.island == m) for m in range(self.n_islands)]
        self.hist: dict[str, Any] = {
            "betas": [0.0],
            "ess": [],
            "resampled": [],
            "acceptance": [],
            "step_size": [],
            "log_z": [],
            "n_alive": [],
            "n_energy_evals": [],
            "ess_is": ess_fraction(self.r),
            "log_z_is": float(log_mean_exp(self.r)),
            "n_invalid_initial": int(n - np.isfinite(self.r).sum()),
            "stopped_at_time_limit": False,
        }
        self.b, self.level, self.n_resampled = 0.0, 0, 0
        self.eps = settings.step_size

    def run(self) -> RefinedSamples | SMCResult:
        """Every level up to b = 1, then the result."""
        while self.b < 1.0:
            self.level_step()
        return self.result()

    def _log_ratio(self) -> np.ndarray:
        """r = -u - log q at the particles (-inf where undefined)."""
        st = self.st
        with np.errstate(invalid="ignore"):
            r = (-st.u - st.lq).numpy()
        ok = np.isfinite(st.u.numpy()) & np.isfinite(st.lq.numpy()) & np.isfinite(r)
        return np.where(ok, r, -np.inf)

    def level_step(self) -> None:
        """One level: reweight to the next beta, resample, move, record."""
        self.level += 1
        cut_before = self.hist["stopped_at_time_limit"]
        b_new = self._next_beta()
        b_old = self.b
        self.lw = self.lw + (b_new - self.b) * self.r
        self.b = b_new
        if not np.isfinite(self.lw).any():  # cannot happen for finite r; guard anyway
            raise InputError("all particles lost their weight")
        ess = kish_ess(self.lw)
        if self.hist["stopped_at_time_limit"] and not cut_before:
            self.hist["cut"] = cut_record(self.lw, b_old)
        n_res = self._resample()
        if self.hist["stopped_at_time_limit"]:  # out of time: no moves after the last weights
            eps_level, accs = self.eps if self.eps is not None else float("nan"), []
        else:
            eps_level, accs = self._move(torch.as_tensor(np.isfinite(self.lw)))
        if self.b < 1.0:
            self.r = self._log_ratio()
            self.r[~np.isfinite(self.lw)] = -np.inf
        self._record(ess, n_res, accs, eps_level)

    def _next_beta(self) -> float:
        s = self.s
        if not s.adaptive:
            return float(s.fixed[self.level - 1])
        b_new = next_beta(self.b, self.lw, self.r, s.cess_target)
        if b_new >= 1.0:
            return b_new
        # a cap reached: the rest of the way in one reweighting (still unbiased; the weights
        # may degenerate, which the ESS and k-hat of the result then show)
        if self.level >= s.max_levels:
            why = f"adaptive schedule reached max_levels={s.max_levels}"
        elif s.deadline is not None and time.monotonic() >= s.deadline:
            why = "the time limit was reached"
            self.hist["stopped_at_time_limit"] = True
        else:
            return b_new
        warnings.warn(
            f"{why} at b={b_new:.3g}; jumping to b=1 (still unbiased, but the weights "
            "may be degenerate)",
            RuntimeWarning,
            stacklevel=self.stacklevel + 3,  # _next_beta, level_step, run
        )
        return 1.0

    def _resample(self) -> int:
        """Systematic resampling inside every island whose ESS fell below the threshold (or
        that holds a dead particle); the island's weights become their mean. Returns the
        number of islands resampled."""
        idx, n_res = np.arange(self.n), 0
        for members in self.islands:
            lw_m = self.lw[members]
            live = np.isfinite(lw_m)
            # dead particles (weight 0) are replaced at once: they cost nothing but hold slots
            if not live.any() or (live.all() and kish_ess(lw_m) >= self.s.resample_threshold):
                continue
            w = np.exp(lw_m - lw_m.max())
            idx[members] = members[systematic_resample(w / w.sum(), self.rng)]
            self.lw[members] = log_mean_exp(lw_m)
            n_res += 1
        if n_res > 0:
            self.st.take(torch.as_tensor(idx))
            self.eve = self.eve[idx]
            self.n_resampled += 1
        return n_res

    def _move(self, alive: torch.Tensor) -> tuple[float, list[float]]:
        """``n_steps`` kernel sweeps at the current beta, adapting the step size after each.
        Returns (the level's first step size, the sweeps' mean acceptance probabilities)."""
        s = self.s
        if self.eps is None:
            self.eps = initial_step(self.st, alive, self.b)
        eps_level, accs = self.eps, []
        for _ in range(s.n_steps):
            acc = hmc_sweep(
                self.st,
                alive,
                self.b,
                self.eps,
                s.n_leapfrog,
                s.jitter,
                self.ev,
                self.gen,
                self.region,
            )
            accs.append(acc)
            if s.adapt_step_size and math.isfinite(acc):
                self.eps *= math.exp(_ADAPT_GAIN * (acc - s.target_acceptance))
        return eps_level, accs

    def _record(self, ess: float, n_res: int, accs: list[float], eps_level: float) -> None:
        h, b = self.hist, self.b
        h["betas"].append(b)
        h["ess"].append(ess)
        h["resampled"].append(n_res)
        h["acceptance"].append(float(np.mean(accs)) if accs else float("nan"))
        h["step_size"].append(eps_level)
        h["log_z"].append(float(log_mean_exp(self.lw)))
        h["n_alive"].append(int(np.isfinite(self.lw).sum()))
        h["n_energy_evals"].append(self.ev.n_energy_evals)
        if self.progress is not None:
            self.progress(b, f"level {self.level}: beta {b:.3g}, ESS {ess:.3f}")
        log.info(
            "refine level %d: beta=%.4g ess=%.3f%s acceptance=%.2f step=%.3g",
            self.level,
            b,
            ess,
            " (resampled)" if n_res > 0 else "",
            h["acceptance"][-1],
            eps_level,
        )

    def result(self) -> RefinedSamples | SMCResult:
        """The weighted particles, log Z with its island error, and the history."""
        s, st, n = self.s, self.st, self.n
        # log q at the final positions (moves at b = 1 do not evaluate it)
        need = torch.isnan(st.lq) & torch.isfinite(st.x.reshape(n, -1)).all(dim=1)
        j = torch.nonzero(need).reshape(-1)
        if len(j):
            st.lq[j] = self.ev.log_q_values(st.x[j])
        lw = self.lw
        self.hist.update(
            n_levels=self.level,
            n_resampling=self.n_resampled,
            n_unique_ancestors=int(len(np.unique(self.eve[np.isfinite(lw)]))),
            n_islands=self.n_islands,
            n_log_q_evals=self.ev.n_log_q_evals,
            step_size_final=self.eps,
            kernel=s.kernel,
            n_leapfrog=s.n_leapfrog,
            n_steps=s.n_steps,
            schedule=s.schedule if isinstance(s.schedule, str) else [float(v) for v in s.fixed],
            cess_target=s.cess_target if s.adaptive else None,
            resample_threshold=s.resample_threshold,
            target_acceptance=s.target_acceptance,
            seed=self.seed,
        )
        extra = {"ancestor": self.eve.astype(np.int64), "island": self.island.astype(np.int64)}
        return make_result(
            self.template,
            st.x.numpy(),
            st.lq.numpy().copy(),
            st.u.numpy().copy(),
            lw,
            float(log_mean_exp(lw)),
            _island_rel_err(lw, self.island, self.n_islands),
            self.ev.n_energy_evals,
            self.hist,
            extra,
        )
