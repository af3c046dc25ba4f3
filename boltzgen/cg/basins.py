r"""Basin balance stage by stage: where a CG model gains or loses the minor basin's mass.

The pipeline passes the balance between two basins of a state dihedral (phi > 0 against
phi < 0 for alanine dipeptide) through four stages; each has its own measurement here:

* data: the (weighted) share of training frames in the basin;
* teacher: the share of flow samples (i.i.d. from q) and of those kept by the force filter;
* student: the share under exp(-E/kT) of the CG force field, by importance sampling with the
  teacher as proposal (free-energy perturbation, ``w = exp(-E(x)/kT) / q(x)`` on teacher
  samples; both are densities of the same Cartesian bead coordinates, so no Jacobian enters);
* CG MD: the share of walker frames, with the number of committed transitions between basin
  cores per walker (:func:`count_transitions`), which says whether the walkers equilibrated
  the basins at all.

``dF = -ln(P / (1 - P))`` in kT (the convention of :func:`boltzgen.cg.metrics.delta_f`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from boltzgen.errors import InputError, ShapeError

__all__ = [
    "PHI_CORES",
    "PSI_CORES",
    "balanced_indices",
    "balanced_starts",
    "basin_share",
    "count_transitions",
    "df_of_share",
    "reweighted_share",
    "state_column",
    "state_share_weights",
    "state_shares",
    "target_state_shares",
    "state_log_calibration",
    "state_labels",
    "walker_record",
]

#: core intervals (radians) of the phi < 0 and phi > 0 basins of a backbone phi: a walker
#: crossed when it went from one core to the other (excursions into the barrier do not count)
PHI_CORES = ((-2.9, -0.6), (0.5, 1.9))
#: the same for a proline's psi (its state dihedral): alpha (psi < 0) and C7eq / PPII (psi > 0)
PSI_CORES = ((-1.3, -0.2), (0.6, 2.9))


def df_of_share(share: float) -> float:
    """-ln(P / (1 - P)) in kT (inf for P = 0, -inf for P = 1)."""
    if not 0.0 <= share <= 1.0:
        return math.nan
    if share == 0.0:
        return math.inf
    if share == 1.0:
        return -math.inf
    return -math.log(share / (1.0 - share))


def basin_share(angle: Any, weights: Any = None) -> float:
    """(Weighted) share of ``angle`` values (radians) in [0, pi): P(phi > 0)."""
    a = np.asarray(angle, dtype=np.float64).reshape(-1)
    w = np.ones_like(a) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.shape != a.shape:
        raise ShapeError(f"weights {w.shape} do not match the angles {a.shape}")
    ok = np.isfinite(a) & np.isfinite(w)
    if not ok.any() or w[ok].sum() <= 0:
        raise InputError("no finite angles with positive weight")
    return float(w[ok][a[ok] >= 0].sum() / w[ok].sum())


def reweighted_share(log_target: Any, log_proposal: Any, angle: Any) -> dict[str, float]:
    """Share of the basin angle >= 0 under an unnormalised target density, estimated from
    proposal samples: self-normalised importance weights exp(log_target - log_proposal).

    Returns ``share``, ``df_kT``, ``ess`` (Kish, as a fraction of the samples) and
    ``ess_plus`` (effective samples inside the basin: below ~100 the share is noisy).
    """
    lt = np.asarray(log_target, np.float64).reshape(-1)
    lp = np.asarray(log_proposal, np.float64).reshape(-1)
    a = np.asarray(angle, np.float64).reshape(-1)
    if not lt.shape == lp.shape == a.shape:
        raise ShapeError("log_target, log_proposal and angle must have one value per sample")
    lw = lt - lp
    ok = np.isfinite(lw) & np.isfinite(a)
    if not ok.any():
        raise InputError("no sample with a finite importance weight")
    w = np.exp(lw[ok] - lw[ok].max())
    plus = a[ok] >= 0
    share = float(w[plus].sum() / w.sum())
    wp = w[plus]
    return {
        "share": share,
        "df_kT": df_of_share(share),
        "ess": float(w.sum() ** 2 / (w**2).sum() / len(lw)),
        "ess_plus": float(wp.sum() ** 2 / (wp**2).sum()) if wp.size else 0.0,
    }


def count_transitions(angle: Any, cores: Sequence[Sequence[float]] = PHI_CORES) -> np.ndarray:
    """Committed transitions per walker between two cores of an angle.

    ``angle`` (n_walkers, n_frames) radians; ``cores`` two (lo, hi) intervals. A frame in a
    core sets the walker's state; a transition is counted when the state changes, so
    excursions into the barrier region that return to the same core are not counted.
    Returns (n_walkers,) integer counts.
    """
    a = np.asarray(angle, np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ShapeError(f"angle must be (n_walkers, n_frames), got {a.shape}")
    (lo0, hi0), (lo1, hi1) = cores
    state = np.full(a.shape, -1, dtype=np.int8)
    state[(a >= lo0) & (a <= hi0)] = 0
    state[(a >= lo1) & (a <= hi1)] = 1
    counts = np.zeros(a.shape[0], dtype=np.int64)
    for k, row in enumerate(state):
        s = row[row >= 0]
        counts[k] = int(np.count_nonzero(s[1:] != s[:-1])) if s.size else 0
    return counts


def state_labels(topology: Any, positions: Any) -> np.ndarray:
    """Backbone state of each CG configuration (N,) strings: the sign pattern of the state
    dihedrals (phi; psi for proline) that :func:`boltzgen.cv.backbone_state_labels` finds on
    the bead topology (beads named N, CA, C in their residues, as
    :meth:`~boltzgen.cg.mapping.Mapping.backbone` makes them); one label ``""`` for all if the
    beads carry no backbone dihedral."""
    from boltzgen.cv import backbone_state_labels

    if hasattr(positions, "detach"):
        positions = positions.detach().cpu().numpy()
    labels, _ = backbone_state_labels(topology, np.asarray(positions))
    return np.asarray(labels, dtype=str)


def balanced_indices(labels: Any, n: int, min_share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` of the labelled samples (without replacement) in which every state
    holds at least ``min_share`` of the selection, as far as its samples allow; the rest in
    proportion to the states' sample shares (water-filling,
    :func:`boltzgen.generator.balance.pattern_weights`). Within a state the pick is uniform,
    so the distribution inside each state is the samples'."""
    from boltzgen.generator.balance import pattern_weights

    lab = np.asarray(labels, dtype=str)
    n = int(n)
    if n > len(lab):
        raise InputError(f"cannot select {n} of {len(lab)} samples")
    _, table = pattern_weights(lab, min_share=min_share, min_frames=1)
    want = {r["state"]: r["weight_share"] * n for r in table}
    pools = {s: rng.permutation(np.flatnonzero(lab == s)) for s in want}
    take = {s: min(len(pools[s]), int(round(want[s]))) for s in want}
    short = n - sum(take.values())
    for s in sorted(want, key=lambda s: -len(pools[s])):  # fill up from the largest pools
        extra = max(0, min(short, len(pools[s]) - take[s]))
        take[s] += extra
        short -= extra
    idx = np.concatenate([pools[s][: take[s]] for s in want])
    return np.sort(idx[:n])


def balanced_starts(
    labels: Any,
    n_walkers: int,
    state_shares: dict[str, float],
    rng: np.random.Generator,
    frame_weights: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Start frames for CG MD spread equally over the states, with walker weights that
    restore the states' equilibrium shares.

    Walker k starts in state s(k) (frames within a state drawn in proportion to
    ``frame_weights``) and weighs ``state_shares[s] / (walkers started in s)``. The dynamics
    leaves its equilibrium unchanged, so once each walker has relaxed inside its basin the
    weighted frames are equilibrium frames whether or not it ever crosses the barrier, and a
    2 % basin is sampled by half the walkers instead of two of them. States missing from
    ``state_shares`` get no walkers. Returns (frame indices (n_walkers,), weights (n_walkers,)
    summing to 1)."""
    lab = np.asarray(labels, dtype=str)
    fw = np.ones(len(lab)) if frame_weights is None else np.asarray(frame_weights, np.float64)
    states = [s for s in np.unique(lab) if state_shares.get(str(s), 0.0) > 0]
    states = [s for s in states if fw[lab == s].sum() > 0]
    if not states or n_walkers < len(states):
        raise InputError(f"cannot spread {n_walkers} walkers over the states {states}")
    per = np.full(len(states), n_walkers // len(states))
    per[: n_walkers - per.sum()] += 1
    idx, weights = [], []
    total = sum(state_shares[str(s)] for s in states)
    for s, n_s in zip(states, per, strict=True):
        pool = np.flatnonzero(lab == s)
        p = fw[pool] / fw[pool].sum()
        idx.append(rng.choice(pool, int(n_s), p=p))
        weights.append(np.full(int(n_s), state_shares[str(s)] / total / n_s))
    return np.concatenate(idx), np.concatenate(weights)


def state_log_calibration(
    data_labels: Any, sample_labels: Any, data_weights: Any = None
) -> dict[str, float]:
    """Per state s, ln(data share / sample share): the constant that moves a teacher's
    log-density in state s so that its state shares become the data's (the data's share is
    the direct estimate of a basin's mass; the flow's is that plus its fitting error, largest
    for a small basin). States without samples or without data get 0."""
    dl = np.asarray(data_labels, dtype=str)
    sl = np.asarray(sample_labels, dtype=str)
    w = np.ones(len(dl)) if data_weights is None else np.asarray(data_weights, np.float64)
    if w.shape != dl.shape:
        raise ShapeError(f"data_weights {w.shape} do not match the data labels {dl.shape}")
    out: dict[str, float] = {}
    for s in np.unique(np.concatenate([dl, sl])):
        d = float(w[dl == s].sum() / w.sum())
        q = float(np.mean(sl == s))
        out[str(s)] = math.log(d / q) if d > 0 and q > 0 else 0.0
    return out


def walker_record(
    topology: Any,
    positions: Any,
    starts: Any,
    cores: Sequence[Sequence[float]] | None = None,
    walker_weights: Any = None,
) -> dict[str, Any] | None:
    """Basin record of CG MD on the first state dihedral of the bead topology (phi for a
    peptide, psi for proline): share of frames at angle >= 0 (and its dF in kT), the start
    frames' share, the shares of the four quarters of the run (a drift says the basins are not
    equilibrated), committed transitions between the ``cores`` (default :data:`PHI_CORES` or
    :data:`PSI_CORES` by the dihedral) in all and per walker, and how many walkers crossed at
    least once. None if the beads carry no backbone dihedral.

    positions (n_walkers, n_frames, n_beads, 3) nm; starts (n_walkers, n_beads, 3) nm;
    walker_weights (n_walkers,) (:func:`balanced_starts`) weigh the shares."""
    from boltzgen.cv import state_dihedrals

    dih = list(state_dihedrals(topology).values())
    if not dih:
        return None
    x = np.asarray(positions)
    w, t = x.shape[:2]
    angle = np.asarray(dih[0](x.reshape(-1, *x.shape[2:]))).reshape(w, t)
    ww = np.ones(w) if walker_weights is None else np.asarray(walker_weights, np.float64)

    def share_of(a: np.ndarray) -> float:
        return basin_share(a, np.broadcast_to(ww[:, None], a.shape))

    share = share_of(angle)
    if cores is None:
        cores = PSI_CORES if dih[0].name.startswith("psi") else PHI_CORES
    counts = count_transitions(angle, cores)
    quarter = max(1, t // 4)
    return {
        "dihedral": dih[0].name,
        "share": share,
        "df_kT": df_of_share(share),
        "start_share": basin_share(np.asarray(dih[0](np.asarray(starts)))),
        "start_share_weighted": basin_share(np.asarray(dih[0](np.asarray(starts))), ww),
        "quarter_shares": [
            share_of(angle[:, q * quarter : (q + 1) * quarter]) for q in range(4) if q * quarter < t
        ],
        "transitions": int(counts.sum()),
        "transitions_per_walker": float(counts.mean()),
        "walkers_crossing": int((counts > 0).sum()),
    }


def state_column(cg: Any) -> int:
    """Which of the CG system's first two dihedrals (phi, psi) is the first state dihedral
    (:func:`boltzgen.cv.state_dihedrals`: psi for proline): the column whose sign the basin
    free energy is scored on. 0 when the beads carry no backbone dihedral."""
    from boltzgen.cv import state_dihedrals

    dih = list(state_dihedrals(cg.topology).values())
    quads = [list(map(int, q)) for q in np.asarray(cg.dihedral_quads)[:2]]
    if dih and list(map(int, dih[0].atoms)) in quads:
        return quads.index(list(map(int, dih[0].atoms)))
    return 0


def state_shares(labels: Any, weights: Any = None) -> dict[str, float]:
    """(Weighted) share of each state label, summing to 1."""
    lab = np.asarray(labels, dtype=str)
    w = np.ones(len(lab)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != lab.shape:
        raise ShapeError(f"weights {w.shape} do not match the labels {lab.shape}")
    total = float(w.sum())
    if not total > 0:
        raise InputError("the weights sum to zero")
    return {str(s): float(w[lab == s].sum() / total) for s in np.unique(lab)}


def state_share_weights(
    labels: Any, target: dict[str, float], weights: Any = None, max_unrepresented: float = 0.01
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frame weights that give each state its ``target`` share (e.g. a refined Boltzmann
    generator's estimate) and keep the frames' distribution inside each state: weight_i times
    target[s_i] / share[s_i]. The frames keep the shape of each basin, the target sets the
    balance between basins, which a finite MD run estimates worst for a rare basin.

    Frames of states without a target share get weight 0. A target state without frames
    cannot be represented: its share (summed) over ``max_unrepresented`` raises
    :class:`~boltzgen.errors.InputError`; below it the other states are renormalised.
    Returns (weights (N,) with mean 1, a JSON-able record: the data's and the target's
    shares and the unrepresented states)."""
    lab = np.asarray(labels, dtype=str)
    w = np.ones(len(lab)) if weights is None else np.asarray(weights, np.float64)
    have = state_shares(lab, w)
    t = {str(k): float(v) for k, v in target.items()}
    if not t or any(not (math.isfinite(v) and v >= 0) for v in t.values()) or sum(t.values()) <= 0:
        raise InputError(f"state shares must be finite, >= 0 and not all 0, got {target}")
    missing = {s: v / sum(t.values()) for s, v in t.items() if v > 0 and have.get(s, 0.0) <= 0}
    if sum(missing.values()) > max_unrepresented:
        raise InputError(
            f"the frames hold no state {sorted(missing)}, which the target state shares give "
            f"{sum(missing.values()):.1%}: the frames cannot represent that mass"
        )
    factor = {s: t.get(s, 0.0) / have[s] if have[s] > 0 else 0.0 for s in have}
    out = w * np.array([factor[s] for s in lab])
    record = {"data": have, "target": state_shares(lab, out), "unrepresented": missing}
    return out / out.sum() * len(out), record


def target_state_shares(source: Any, mapping: Any, cg: Any) -> dict[str, float]:
    """State shares from a dict {label: share}, or estimated from weighted all-atom samples
    (a ``Samples`` / ``RefinedSamples`` or its HDF5 file, e.g. ``samples.h5`` of ``boltzgen
    run``; unweighted frames count equally), labelled on the CG beads as the pipeline labels
    its frames."""
    if isinstance(source, dict):
        return {str(k): float(v) for k, v in source.items()}
    from boltzgen.cg.frames import load_weighted_frames, weights_from_log

    x, _, lw = load_weighted_frames(source)
    labels = state_labels(cg.topology, mapping.map_positions(x))
    return state_shares(labels, None if lw is None else weights_from_log(lw, len(x)))
