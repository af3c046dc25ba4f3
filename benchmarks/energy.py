"""Energy + force evaluations per second: boltzgen.energy vs a bare OpenMM loop.

Same platform, same 1000 alanine-dipeptide configurations (from a short Langevin run), vacuum and
OBC2, boltzgen with 1 and 2 workers (energy_and_forces, and the autograd path u(x).backward()).
Two bare loops: the public OpenMM Python API (setPositions + getState(energy, forces) +
getForces(asNumpy=True)), and the same calls on OpenMM's SWIG layer, which boltzgen uses.
The implementations are timed in interleaved, order-rotated rounds in one process; medians and
best rounds are compared. Prints one JSON object per line.

    .venv/bin/python benchmarks/energy.py [--repeats 31] [--budget 45] [--batch 1000]
        [--platforms Reference CPU] [--solvents vacuum obc2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import openmm
import torch

from boltzgen.energy import EnergyModel
from boltzgen.md import simulate
from boltzgen.systems import System


def bare_loop(context: openmm.Context, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loop a user would write: setPositions + getState(energy, forces), numpy out."""
    energy = np.empty(len(x))
    forces = np.empty_like(x)
    for b in range(len(x)):
        context.setPositions(x[b])
        state = context.getState(getEnergy=True, getForces=True)
        energy[b] = state.getPotentialEnergy()._value
        forces[b] = state.getForces(asNumpy=True)._value
    return energy, forces


def bare_loop_swig(context: openmm.Context, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same loop on OpenMM's SWIG functions (what boltzgen's fast path calls)."""
    from openmm import _openmm

    kinds = openmm.State.Energy + openmm.State.Forces
    energy = np.empty(len(x))
    forces = np.empty_like(x)
    for b in range(len(x)):
        _openmm.Context_setPositions(context, x[b])
        state = _openmm.Context_getState(context, kinds, False, -1)
        energy[b] = _openmm.State_getPotentialEnergy(state)
        state._getVectorAsNumpy(openmm.State.Forces, forces[b])
    return energy, forces


def timed(fn, *args) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=31, help="at most this many rounds")
    parser.add_argument(
        "--budget", type=float, default=45.0, help="seconds per case; at least 5 rounds"
    )
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"])
    parser.add_argument("--solvents", nargs="+", default=["vacuum", "obc2"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    for solvent in args.solvents:
        system = System.alanine_dipeptide(solvent=solvent)
        traj = simulate(
            system,
            args.batch * 50,
            timestep=0.001,
            report_interval=50,
            seed=1,
            platform="Reference",
        )
        x_np = np.ascontiguousarray(traj.xyz, dtype=np.float64)
        x_t = torch.from_numpy(x_np)
        for platform in args.platforms:
            props = {"Threads": "1"} if platform == "CPU" else {}
            context = openmm.Context(
                system.openmm_system,
                openmm.VerletIntegrator(0.001),
                openmm.Platform.getPlatformByName(platform),
                props,
            )
            one = EnergyModel(system, platform=platform, n_workers=1, platform_properties=props)
            two = EnergyModel(system, platform=platform, n_workers=2, platform_properties=props)
            x_g = x_t.clone().requires_grad_(True)
            impls = {
                "bare_openmm": lambda c=context, x=x_np: bare_loop(c, x),
                "bare_openmm_swig": lambda c=context, x=x_np: bare_loop_swig(c, x),
                "boltzgen_1w": lambda m=one, x=x_t: m.energy_and_forces(x),
                "boltzgen_1w_autograd": lambda m=one, x=x_g: m(x).sum().backward(),
                "boltzgen_2w": lambda m=two, x=x_t: m.energy_and_forces(x),
            }
            # warm-up (starts the worker pool) and a correctness check on the way
            e_bare, f_bare = bare_loop(context, x_np)
            for m in (one, two):
                u, f = m.energy_and_forces(x_t)
                assert np.allclose(u.numpy() * system.kT, e_bare, rtol=1e-9, atol=0)
                assert np.allclose(f.numpy(), f_bare, rtol=1e-9, atol=1e-9)
            times: dict[str, list[float]] = {k: [] for k in impls}
            start = time.perf_counter()
            for r in range(args.repeats):
                if r >= 5 and time.perf_counter() - start > args.budget:
                    break
                # interleaved rounds, rotating the order so no implementation always goes first
                names = list(impls)
                names = names[r % len(names) :] + names[: r % len(names)]
                for name in names:
                    x_g.grad = None
                    times[name].append(timed(impls[name]))
            # median: typical throughput on this (shared) machine; best: least-disturbed round
            rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
            best = {k: args.batch / min(v) for k, v in times.items()}
            for name, v in times.items():
                row = {
                    "bench": "energy",
                    "platform": platform,
                    "solvent": solvent,
                    "impl": name,
                    "batch": args.batch,
                    "evals_per_s": round(rate[name], 1),
                    "best_evals_per_s": round(best[name], 1),
                    "rounds": len(v),
                    "repeat_s": [round(t, 4) for t in v],
                }
                print(json.dumps(row), flush=True)
            for stat, rt in (("median", rate), ("best", best)):
                row = {
                    "bench": "energy_ratio",
                    "stat": stat,
                    "platform": platform,
                    "solvent": solvent,
                    "one_worker_vs_bare": round(rt["boltzgen_1w"] / rt["bare_openmm"], 3),
                    "one_worker_vs_bare_swig": round(rt["boltzgen_1w"] / rt["bare_openmm_swig"], 3),
                    "autograd_vs_bare": round(rt["boltzgen_1w_autograd"] / rt["bare_openmm"], 3),
                    "two_vs_one_worker": round(rt["boltzgen_2w"] / rt["boltzgen_1w"], 3),
                }
                print(json.dumps(row), flush=True)
            one.close()
            two.close()


if __name__ == "__main__":
    main()
