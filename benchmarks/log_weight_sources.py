"""Where a flow's log-weight variance comes from (issue 21): each force group's reduced energy
(kT) over the flow's draws against the MD frames (the training frames weighted as in training),
each group's share of Var(log w), and the atom pairs whose nonbonded energy the flow raises most.

One JSON object per line: a header row (draws, trimmed, bulk ESS, Var(log w)), one row per force
group, one row per kind of nonbonded pair (1-4, >= 1-5, with a hydrogen), the top pairs.

Draws whose energy exceeds the frames' largest by 50 kT (clashes: a handful of weights, zero)
are left out, so the shares describe the bulk that sets the ESS. A group's share is
Cov(log w, -u_group) / Var(log w); the shares and that of -log q sum to 1.

    python benchmarks/log_weight_sources.py MODEL.pt FRAMES.h5 [--draws 4000] [--top 12]
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import openmm
import openmm.unit as unit
import torch
from flow_quality import balanced_data  # the sibling benchmark's training weights

import boltzgen as bg
from boltzgen.analysis import n_effective

ONE_4PI_EPS0 = 138.935456  # kJ nm / (mol e^2), OpenMM's Coulomb constant


def group_energies(system, xyz: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(n, groups) reduced energies of positions (n, n_atoms, 3) nm, one group per force."""
    sysm = copy.deepcopy(system.openmm_system)
    names = []
    for i, f in enumerate(sysm.getForces()):
        f.setForceGroup(i)
        names.append(type(f).__name__)
    ctx = openmm.Context(
        sysm, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    out = np.zeros((len(xyz), len(names)))
    for k, x in enumerate(xyz):
        ctx.setPositions(x)
        for i in range(len(names)):
            e = ctx.getState(getEnergy=True, groups={i}).getPotentialEnergy()
            out[k, i] = e.value_in_unit(unit.kilojoule_per_mole) / system.kT
    return out, names


def pair_terms(system):
    """Nonbonded pairs (1-2 and 1-3 excluded): index arrays, charge products, sigma, epsilon
    and kind (4: scaled 1-4, 5: >= 1-5) from the NonbondedForce (no cutoff, vacuum)."""
    nb = next(f for f in system.openmm_system.getForces() if isinstance(f, openmm.NonbondedForce))
    n = system.n_atoms
    p = np.array([[v._value for v in nb.getParticleParameters(i)] for i in range(n)])
    q, s, e = (
        np.outer(p[:, 0], p[:, 0]),
        0.5 * (p[:, 1, None] + p[None, :, 1]),
        np.sqrt(np.outer(p[:, 2], p[:, 2])),
    )
    kind = np.full((n, n), 5)
    for k in range(nb.getNumExceptions()):
        i, j, qq, ss, ee = nb.getExceptionParameters(k)
        q[i, j] = q[j, i] = qq._value
        s[i, j] = s[j, i] = ss._value
        e[i, j] = e[j, i] = ee._value
        kind[i, j] = kind[j, i] = 4 if (qq._value or ee._value) else 3
    i, j = np.triu_indices(n, 1)
    keep = kind[i, j] != 3
    i, j = i[keep], j[keep]
    return i, j, q[i, j], s[i, j], e[i, j], kind[i, j]


def pair_energies(terms, xyz: np.ndarray, kT: float) -> np.ndarray:
    """(n, pairs) Coulomb + Lennard-Jones energies (kT) of positions (n, n_atoms, 3) nm."""
    i, j, q, s, e, _ = terms
    r = np.linalg.norm(xyz[:, i] - xyz[:, j], axis=-1)
    sr6 = (s / r) ** 6
    return (ONE_4PI_EPS0 * q / r + 4.0 * e * (sr6 * sr6 - sr6)) / kT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("frames")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = bg.BoltzmannGenerator.load(args.model)
    system = gen.system
    torch.manual_seed(args.seed)
    with torch.no_grad():
        x, log_q = gen.sample_positions(args.draws)
    x, log_q = x.double().numpy(), log_q.double().numpy()
    md = bg.load_md(args.frames)
    step = max(1, md.trajectory.n_frames // args.draws)
    xd = np.asarray(md.trajectory.xyz, dtype=np.float64)[::step][: args.draws]
    # the frames weighted as the training weighs them (every populated backbone state >= 5 %)
    wd = balanced_data(system, xd, None).weights
    wd = wd / wd.sum()
    eq, names = group_energies(system, x)
    ed, _ = group_energies(system, xd)
    ok = np.isfinite(eq).all(1) & np.isfinite(log_q) & (eq.sum(1) < ed.sum(1).max() + 50.0)
    lw = -eq[ok].sum(1) - log_q[ok]
    var = float(np.var(lw))
    print(
        json.dumps(
            {
                "model": args.model,
                "draws": args.draws,
                "trimmed": int((~ok).sum()),
                "ess_bulk": n_effective(lw) / args.draws,
                "var_log_w": var,
            }
        ),
        flush=True,
    )
    for g, name in enumerate(names):
        print(
            json.dumps(
                {
                    "group": name,
                    "flow_mean_kT": float(eq[ok, g].mean()),
                    "frames_mean_kT": float(wd @ ed[:, g]),
                    "excess_kT": float(eq[ok, g].mean() - wd @ ed[:, g]),
                    "share_of_var_log_w": float(np.cov(lw, -eq[ok, g])[0, 1] / var),
                }
            )
        )
    print(
        json.dumps(
            {"group": "-log q", "share_of_var_log_w": float(np.cov(lw, -log_q[ok])[0, 1] / var)}
        )
    )
    terms = pair_terms(system)
    ex = pair_energies(terms, x[ok], system.kT).mean(0) - wd @ pair_energies(terms, xd, system.kT)
    atoms = list(system.topology.atoms)
    i, j, kind = terms[0], terms[1], terms[5]
    has_h = np.array(
        [
            atoms[a].element.symbol == "H" or atoms[b].element.symbol == "H"
            for a, b in zip(i, j, strict=True)
        ]
    )
    print(
        json.dumps(
            {
                "nonbonded_excess_kT": float(ex.sum()),
                "pairs_1_4": float(ex[kind == 4].sum()),
                "pairs_1_5_and_beyond": float(ex[kind == 5].sum()),
                "pairs_with_hydrogen": float(ex[has_h].sum()),
            }
        )
    )
    for k in np.argsort(-ex)[: args.top]:
        kk = "1-4" if kind[k] == 4 else ">=1-5"
        print(
            json.dumps(
                {"pair": f"{atoms[i[k]]}-{atoms[j[k]]}", "kind": kk, "excess_kT": float(ex[k])}
            )
        )


if __name__ == "__main__":
    main()
