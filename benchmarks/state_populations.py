"""Every backbone sign pattern's population at once, scored against a reference (issue 11's
is-it-worth-it table for a quantity that needs no CV).

A peptide's backbone states are the sign patterns of its residues' state dihedrals
(:func:`boltzgen.cv.backbone_state_labels`; three residues: up to 8 patterns). Each source
gives F = -log P (kT) per pattern with an error:

* ``--reference``: JSON lines of ``molecules.py reference`` (one row per metadynamics seed
  with ``states``); the seeds are combined per pattern by
  :func:`boltzgen.diagnostics.combine_estimates` (mean, error max(stated, spread)).
* ``--runs``: `boltzgen run` output directories: ``summary.json``'s ``state_populations``,
  or, for runs made before it existed, the same numbers recomputed from the checkpointed
  refinements of every flow (:func:`boltzgen.refinement.strata_state_free_energies`).
* ``--baselines``: JSON lines of ``molecules.py baseline`` (REMD or metadynamics alone),
  one score per prefix of the record (its core-seconds beside it).

One JSON object per source on stdout: per pattern F, error, reference, miss and z; and the
scores: total-variation distance 0.5 sum |P - P_ref| over all patterns; over the patterns
holding >= ``--min-population`` of the reference: how many the source never reached or gave
no finite error, the largest |miss| and |z|, and how many its own error covers at 2 sigma
(error and reference error in quadrature).

    .venv/bin/python benchmarks/state_populations.py --reference ref-1.jsonl ref-2.jsonl \
        --runs /tmp/ggp0 /tmp/ggp1 --baselines remd.jsonl metad.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from boltzgen.diagnostics import combine_estimates
from boltzgen.jsonable import json_clean
from boltzgen.refinement import RefinedSamples, strata_state_free_energies

States = dict[str, dict[str, float]]  # pattern -> {"free_energy_kT", "err_kT"}


def _rows(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        out += [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]
    return out


def _from_json(states: dict[str, Any]) -> States:
    """A JSON row's patterns (an infinite error was written as null)."""
    return {
        k: {
            "free_energy_kT": v["free_energy_kT"],
            "err_kT": math.inf if v["err_kT"] is None else v["err_kT"],
        }
        for k, v in states.items()
    }


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def combine(per_seed: list[States]) -> States:
    """Per pattern: the seeds' mean with error max(stated, spread); a pattern some seed never
    visited, or whose error some seed could not state, gets an infinite error."""
    out: States = {}
    for k in sorted(set().union(*per_seed)):
        got = [s[k] for s in per_seed if k in s]
        values = [g["free_energy_kT"] for g in got]
        errors = [g["err_kT"] for g in got]
        if len(got) == len(per_seed) > 1 and all(map(_finite, values + errors)):
            c = combine_estimates(values, errors)
            out[k] = {"free_energy_kT": c.value, "err_kT": c.error}
        else:
            out[k] = {"free_energy_kT": sum(values) / len(values), "err_kT": math.inf}
    return out


def reference_states(paths: list[str]) -> tuple[States, list[str]]:
    """The reference's F per pattern (seeds combined) and the dihedrals' names."""
    rows = [r for r in _rows(paths) if "states" in r]
    if not rows:
        raise SystemExit("no reference row with 'states' (molecules.py reference)")
    return combine([_from_json(r["states"]["all"]) for r in rows]), rows[0]["states"]["dihedrals"]


def run_states(out: Path) -> States:
    """One `boltzgen run`'s F per pattern (its flows combined)."""
    s = json.loads((out / "summary.json").read_text())
    if s.get("state_populations", {}).get("states"):
        return {
            r["state"]: {"free_energy_kT": r["free_energy_kT"], "err_kT": r["err_kT"]}
            for r in s["state_populations"]["states"]
            if r["free_energy_kT"] is not None
        }
    ckpt = Path(s["checkpoint_dir"])
    files = [ckpt / "refined.h5"] + sorted(ckpt.glob("flow*/refined.h5"))
    flows = [strata_state_free_energies(RefinedSamples.load(f).history["strata"]) for f in files]
    return combine(flows)


def score(est: States, ref: States, min_population: float) -> dict[str, Any]:
    """Per-pattern misses against the reference and the summary scores."""
    rows, tv = {}, 0.0
    for k in sorted(set(est) | set(ref)):
        p = math.exp(-est[k]["free_energy_kT"]) if k in est else 0.0
        p_ref = math.exp(-ref[k]["free_energy_kT"]) if k in ref else 0.0
        tv += 0.5 * abs(p - p_ref)
        row = {"population": p, "reference_population": p_ref}
        if k in est and k in ref:
            miss = est[k]["free_energy_kT"] - ref[k]["free_energy_kT"]
            sigma = math.hypot(est[k]["err_kT"], ref[k]["err_kT"])
            row.update(
                free_energy_kT=est[k]["free_energy_kT"],
                err_kT=est[k]["err_kT"],
                reference_kT=ref[k]["free_energy_kT"],
                reference_err_kT=ref[k]["err_kT"],
                miss_kT=miss,
                z=miss / sigma if sigma > 0 else math.inf,
            )
        rows[k] = row
    judged = [k for k in ref if math.exp(-ref[k]["free_energy_kT"]) >= min_population]
    found = [k for k in judged if "miss_kT" in rows[k]]
    stated = [k for k in found if math.isfinite(rows[k]["err_kT"])]
    return {
        "states": rows,
        "total_variation": tv,
        "n_judged": len(judged),
        "n_missing": len(judged) - len(found),  # judged patterns the source never reached
        "n_unstated": len(found) - len(stated),  # ... or reached without a finite error
        "max_abs_miss_kT": max((abs(rows[k]["miss_kT"]) for k in found), default=None),
        "max_abs_z": max((abs(rows[k]["z"]) for k in stated), default=None),
        "n_covered_2sigma": sum(abs(rows[k]["z"]) <= 2.0 for k in stated),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", nargs="+", required=True)
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--baselines", nargs="*", default=[])
    p.add_argument("--min-population", type=float, default=0.01)
    args = p.parse_args(argv)
    ref, names = reference_states(args.reference)
    emit = lambda row: print(json.dumps(json_clean(row)), flush=True)  # noqa: E731
    emit({"source": "reference", "dihedrals": names, "states": ref})
    for d in args.runs:
        s = json.loads((Path(d) / "summary.json").read_text())
        wall = s["wall_time_s"]["total"]
        cores = s["config"].get("cores") or 1
        row = {"source": "boltzgen run", "out": d, "wall_s": wall, "cores": cores}
        emit({**row, **score(run_states(Path(d)), ref, args.min_population)})
    for r in _rows(args.baselines):
        for pre in r["prefixes"]:
            est = _from_json(pre["states"]["all"])
            row = {"source": f"{r['method']} alone", "seed": r["seed"], "fraction": pre["fraction"]}
            row["core_s"] = pre["core_s"]
            emit({**row, **score(est, ref, args.min_population)})


if __name__ == "__main__":
    main()
