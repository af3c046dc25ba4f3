"""The temperature ladder of replica exchange, chosen from the molecule's size, and the timing
of a short replica-exchange run that sizes a run to a wall-clock budget.

:func:`temperature_ladder` picks the fewest replicas whose predicted neighbour swap acceptance
(:func:`predicted_acceptance`, harmonic approximation) reaches a target; :func:`calibrate_remd`
measures steps per second and the setup cost of :func:`boltzgen.enhanced.replica_exchange`.
Units: K, s.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
from scipy.special import erfcinv

from boltzgen.enhanced import geometric_temperatures, replica_exchange
from boltzgen.errors import InputError
from boltzgen.simulation import LangevinConfig

__all__ = [
    "calibrate_remd",
    "degrees_of_freedom",
    "predicted_acceptance",
    "temperature_ladder",
]


def degrees_of_freedom(system) -> int:
    """Internal degrees of freedom 3n - 6 minus constraints (what the ladder rule counts)."""
    return max(1, 3 * system.n_atoms - 6 - system.openmm_system.getNumConstraints())


def predicted_acceptance(ratio: float, dof: int) -> float:
    """Mean swap acceptance between neighbours at temperatures T and ``ratio`` T for a
    molecule with ``dof`` degrees of freedom, in the harmonic approximation:
    ``erfc(ln(ratio) sqrt(dof) / (2 sqrt 2))``.

    Derivation: the potential energy has mean dof kT/2 and variance dof (kT)^2 / 2, so
    X = (beta_i - beta_j)(U_i - U_j) is Gaussian with variance s^2 = dof x^2 (x = ln ratio) and
    mean -s^2/2, and E[min(1, e^X)] = erfc(s / (2 sqrt 2)). For alanine dipeptide (dof 60) on
    the 5-replica 300-600 K ladder this predicts 0.50; 0.51 was measured (data/README.md).
    """
    return float(math.erfc(math.log(ratio) * math.sqrt(dof) / (2.0 * math.sqrt(2.0))))


def temperature_ladder(
    system, t_max: float | None = None, target_acceptance: float = 0.4, max_replicas: int = 16
) -> tuple[np.ndarray, dict[str, Any]]:
    """The REMD ladder for ``system``: geometric from its temperature T to ``t_max`` (default
    2 T, 600 K at 300 K) with the fewest replicas whose predicted neighbour acceptance
    (:func:`predicted_acceptance`) is at least ``target_acceptance``.

    Rule: the largest ratio between neighbours is x* = exp(2 sqrt 2 erfcinv(p) / sqrt(dof));
    replicas R = 1 + ceil(ln(t_max / T) / ln x*). Alanine dipeptide (dof 60, p = 0.4): 5
    replicas 300-600 K; a 42-atom tripeptide (dof 120): 6; Trp-cage (dof 906): 13. If R
    exceeds ``max_replicas`` the ladder keeps the acceptance and stops lower (t_max falls):
    replicas that do not exchange are of no use.

    Returns: (temperatures (R,) K, info dict with dof, ratio, predicted acceptance).
    """
    t0 = float(system.temperature)
    top = 2.0 * t0 if t_max is None else float(t_max)
    if top <= t0:
        raise InputError(f"t_max ({top} K) must exceed the temperature ({t0} K)")
    dof = degrees_of_freedom(system)
    log_x = 2.0 * math.sqrt(2.0) * float(erfcinv(target_acceptance)) / math.sqrt(dof)
    n_gaps = max(1, math.ceil(math.log(top / t0) / log_x - 1e-9))
    capped = n_gaps + 1 > max_replicas
    if capped:
        n_gaps = max_replicas - 1
        top = t0 * math.exp(log_x * n_gaps)
    temps = geometric_temperatures(t0, top, n_gaps + 1)
    ratio = float(temps[1] / temps[0])
    info = {
        "dof": dof,
        "n_replicas": len(temps),
        "t_min_K": t0,
        "t_max_K": float(temps[-1]),
        "t_max_requested_K": 2.0 * t0 if t_max is None else float(t_max),
        "capped_by_max_replicas": capped,
        "neighbour_ratio": ratio,
        "target_acceptance": float(target_acceptance),
        "predicted_acceptance": predicted_acceptance(ratio, dof),
        "rule": "geometric T..t_max; replicas = 1 + ceil(ln(t_max/T) / (2 sqrt2 "
        "erfcinv(p) / sqrt(dof))), dof = 3n - 6 - constraints",
    }
    return temps, info


class _StopCalibration(Exception):
    """Raised from the progress callback to end the timing run."""


def calibrate_remd(
    system,
    temperatures: np.ndarray,
    *,
    seconds: float = 2.0,
    exchange_interval: int = 100,
    langevin: LangevinConfig | None = None,
    n_workers: int = 1,
) -> dict[str, float]:
    """Time a short replica-exchange run: steps per second (every replica advancing one
    step) and the fixed setup cost (contexts, minimisation), in about ``seconds``.

    The run is stopped from its progress callback once ``seconds`` have passed after the
    first exchange cycle (or after 20,000 steps). ``langevin``: the MD settings of the run to
    be planned (its seed is offset, so the timing run is not the production run's start);
    ``n_workers``: the processes of that run (the setup then includes starting them)."""
    langevin = langevin or LangevinConfig()
    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()

    def tick(done: int, total: int) -> None:
        now = time.perf_counter()
        marks.append((now, done))
        if now - marks[0][0] >= seconds and len(marks) >= 3:
            raise _StopCalibration

    with contextlib.suppress(_StopCalibration):
        replica_exchange(
            system,
            temperatures,
            n_steps=20_000,
            exchange_interval=exchange_interval,
            report_interval=exchange_interval,
            n_equilibration=0,
            langevin=langevin.replace(seed=langevin.seed + 7919),
            progress=tick,
            n_workers=n_workers,
        )
    wall = time.perf_counter() - t0
    if len(marks) < 2:
        raise InputError("REMD calibration recorded no progress")
    (ta, sa), (tb, sb) = marks[0], marks[-1]
    rate = (sb - sa) / max(tb - ta, 1e-6)
    setup = max(0.0, (ta - t0) - sa / rate)
    return {"steps_per_second": rate, "setup_seconds": setup, "calibration_seconds": wall}
