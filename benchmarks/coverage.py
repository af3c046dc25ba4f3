"""Do the verdicts deserve trust? `boltzgen run` against converged references (issue 22).

Runs ``boltzgen run`` (one process at a time, ``nice -n 10``, ``--cores 1`` where the CLI has
it) on molecules whose state-dihedral dF has a converged reference (table ``REFERENCES`` below,
each with its source in benchmarks/RESULTS.md), at a few budgets and seeds, then checks the
issue's targets on every reported number:

* among numbers marked ``reliable``: at least 90 % have |z| <= 2, none has |z| > 3 and none
  misses by more than 0.5 kT (z = miss / sqrt(stated^2 + reference^2));
* every number that misses by more than 3 combined sigma is marked ``not converged``;
* the share marked ``reliable`` per budget (at one hour ADP and ACE-PRO-NME must be
  ``reliable``: checked only when ``--long-seeds`` ran).

Output under ``--out``: ``runs/<molecule>-<budget>-s<seed>/`` (the run's own files, its
console output in ``console.txt``), ``rows.jsonl`` (one JSON object per CV per run, also
printed) and ``summary.json`` (the target checks, also printed last). Resumable: a run whose
``summary.json`` exists is not run again, its rows are rebuilt from it.

    .venv/bin/python benchmarks/coverage.py --out /tmp/coverage \
        --short 2m --short-seeds 0 1 2 3 --medium 6m --medium-seeds 0
    .venv/bin/python benchmarks/coverage.py --out /tmp/coverage --long-seeds 0 1  # one hour
    .venv/bin/python benchmarks/coverage.py --out /tmp/coverage --summarize-only

``--code DIR`` runs another checkout's boltzgen (e.g. a frozen ``git archive`` of the commit
under test, so that commits made while the campaign runs do not leak into it); ``--commit``
names that commit in the output (default: ``git rev-parse HEAD`` of ``--code``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: molecule -> (PDB, solvent, {CV: (reference dF / kT, its error, source in RESULTS.md)}).
REFERENCES: dict[str, tuple[str, str, dict[str, tuple[float, float, str]]]] = {
    "adp-vacuum": (
        "data/alanine-dipeptide.pdb",
        "vacuum",
        {
            "phi:2": (
                3.61,
                0.05,
                "12 2-D metadynamics walkers, 'vacuum reference redone', 2026-12-04",
            )
        },
    ),
    "adp-obc2": (
        "data/alanine-dipeptide.pdb",
        "obc2",
        {
            "phi:2": (
                3.97,
                0.16,
                "two 2-D metadynamics walkers, '2-D (phi, psi) references', 2026-12-02",
            )
        },
    ),
    "ace-pro-nme": (
        "data/peptides/ace-pro-nme.pdb",
        "vacuum",
        {"psi:2": (-3.87, 0.06, "metadynamics, two seeds, 'Held-out capped peptides', 2026-12-02")},
    ),
    "ace-gly-gly-pro-nme": (
        "data/peptides/ace-gly-gly-pro-nme.pdb",
        "vacuum",
        {
            # six seeds x 6M production steps (RESULTS.md, 2026-12-06, tenth session); the
            # two-seed reference of 'Held-out capped peptides' was 0.91/-1.18/-0.85 +- 0.12-0.24
            "phi:2": (0.85, 0.10, "3-D metadynamics, six seeds, 2026-12-06"),
            "phi:3": (-1.29, 0.09, "3-D metadynamics, six seeds, 2026-12-06"),
            "psi:4": (-0.71, 0.07, "3-D metadynamics, six seeds, 2026-12-06"),
        },
    ),
    "ace-trp-nme": (
        "data/peptides/ace-trp-nme.pdb",
        "vacuum",
        {"phi:2": (4.53, 0.16, "metadynamics on phi, chi1, chi2, three seeds, 2026-12-04")},
    ),
    "ace-ser-ser-nme": (
        "data/peptides/ace-ser-ser-nme.pdb",
        "vacuum",
        {
            "phi:2": (2.98, 0.14, "2-D metadynamics, two seeds, 2026-12-04"),
            "phi:3": (3.66, 0.16, "2-D metadynamics, two seeds, 2026-12-04"),
        },
    ),
}
DEFAULT_MOLECULES = ("adp-vacuum", "adp-obc2", "ace-pro-nme", "ace-gly-gly-pro-nme", "ace-trp-nme")
#: The issue's targets.
Z_RELIABLE, SHARE_RELIABLE, Z_MAX, MISS_MAX = 2.0, 0.9, 3.0, 0.5
MUST_BE_RELIABLE_AT_HOUR = ("adp-vacuum", "ace-pro-nme")


def _emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def _seconds(text: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    return float(text[:-1]) * units[text[-1]]


def _plan(args) -> list[tuple[str, str, int, str]]:
    """(budget label, budget, seed, molecule) per run, in the order run: two seeds of the short budget,
    then the medium, then the other short seeds, then the long (an interrupted campaign still
    covers every budget it reached)."""
    short = [("short", args.short, s, m) for s in args.short_seeds for m in args.short_molecules]
    medium = [
        ("medium", args.medium, s, m) for s in args.medium_seeds for m in args.medium_molecules
    ]
    long = [("long", args.long, s, m) for s in args.long_seeds for m in args.long_molecules]
    cut = 2 * len(args.short_molecules)
    return short[:cut] + medium + short[cut:] + long


def _commit(code: Path, given: str | None) -> str:
    if given:
        return given
    done = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _has_cores(python: str, env: dict[str, str]) -> bool:
    """Whether this checkout's PipelineConfig has ``cores`` (another branch adds it)."""
    code = (
        "from boltzgen.pipeline.config import PipelineConfig as C; print('cores' in C.model_fields)"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    return done.stdout.strip() == "True"


def _run_one(
    mol: str, label: str, budget: str, seed: int, run_dir: Path, ctx: dict[str, Any]
) -> dict:
    """Run ``boltzgen run`` once (unless its summary exists); its run record."""
    pdb, solvent, _ = REFERENCES[mol]
    record_path = run_dir / "run.json"
    if record_path.exists() or (run_dir / "summary.json").exists():
        return _record(run_dir, ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["nice", "-n", "10", ctx["python"], "-m", "boltzgen", "run", str(ctx["code"] / pdb)]
    cmd += ["--out", str(run_dir), "--budget", budget, "--solvent", solvent]
    cmd += ["--seed", str(seed), "--quiet"] + (["--cores", "1"] if ctx["cores"] else [])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run_dir / "console.txt", "w") as console:
        # cwd: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH
        done = subprocess.run(
            cmd, stdout=console, stderr=subprocess.STDOUT, env=ctx["env"], cwd=ctx["code"]
        )
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "molecule": mol,
        "budget_label": label,
        "budget": budget,
        "seed": seed,
        "command": shlex.join(cmd),
        "exit_code": done.returncode,
        "wall_s": time.perf_counter() - t0,
        # core-seconds of the run (user + system, its worker processes included)
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "commit": ctx["commit"],
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    record_path.write_text(json.dumps(record, indent=1))
    return record


def _record(run_dir: Path, ctx: dict[str, Any]) -> dict:
    """A finished run's record; for a run whose driver was stopped after the run wrote its
    summary (no run.json), one made from the directory name and the summary (no load, no CPU
    time), and saved."""
    path = run_dir / "run.json"
    if path.exists():
        rec = json.loads(path.read_text())
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
        rec = {
            "exit_code": 0,
            "wall_s": summary["wall_time_s"]["total"],
            "cpu_s": None,
            "load_before": [None],
            "load_after": [None],
            "commit": ctx["commit"],
            "note": "driver restarted: record rebuilt from summary.json",
            "budget": f"{summary['config']['budget_minutes']:g}m",
        }
    mol, label, seed = run_dir.name.rsplit("-", 2)
    rec.setdefault("molecule", mol)
    rec.setdefault("budget_label", label)
    rec.setdefault("seed", int(seed[1:]))
    rec.setdefault("budget", None)
    if rec["budget"] is None:
        summary = json.loads((run_dir / "summary.json").read_text())
        rec["budget"] = f"{summary['config']['budget_minutes']:g}m"
    path.write_text(json.dumps(rec, indent=1))
    return rec


def _rows(run_dir: Path, record: dict) -> list:
    """One row per reported CV of the run (a failed run: one row with its exit code)."""
    mol, label, budget = record["molecule"], record["budget_label"], record["budget"]
    _, solvent, refs = REFERENCES[mol]
    base = {
        "molecule": mol,
        "solvent": solvent,
        "budget": label,
        "budget_s": _seconds(budget),
        "seed": record["seed"],
        "wall_s": round(record["wall_s"], 1),
        "cpu_s": record.get("cpu_s"),
        "load_before": record["load_before"][0],
        "load_after": record["load_after"][0],
        "commit": record["commit"],
    }
    summary_path = run_dir / "summary.json"
    if record["exit_code"] != 0 or not summary_path.exists():
        return [{**base, "cv": None, "failed": True, "exit_code": record["exit_code"]}]
    summary = json.loads(summary_path.read_text())
    rows = []
    for cv, fe in summary["free_energies"].items():
        ref, ref_err, source = refs.get(cv, (None, None, None))
        df, err = fe.get("df_kT"), fe.get("err_kT")
        miss = z = None
        if ref is not None and _finite(df) and _finite(err):
            miss = df - ref
            z = miss / math.hypot(err, ref_err)
        rows.append(
            {
                **base,
                "cv": cv,
                "df_kT": df,
                "err_kT": err,
                "reference_kT": ref,
                "reference_err_kT": ref_err,
                "reference_source": source,
                "miss_kT": miss,
                "z": z,
                "verdict": fe.get("verdict"),
                "reasons": fe.get("reasons", []),
                "k_hat": fe.get("k_hat"),
                "ess": fe.get("ess"),
                "flows_df_kT": [f.get("df_kT") for f in fe.get("flows") or []],
                "run_wall_s": summary["wall_time_s"].get("total"),
                "leftover_spent": summary.get("leftover_spent"),
            }
        )
    return rows


def _per_run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each run (wall and CPU time are per run, not per CV)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault((r["molecule"], r["budget"], r["seed"]), r)
    return list(seen.values())


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def targets(rows: list[dict[str, Any]], long_ran: bool) -> dict[str, Any]:
    """The issue's target checks over the rows that have a reference and a number."""
    judged = [r for r in rows if r.get("z") is not None]
    reliable = [r for r in judged if r["verdict"] == "reliable"]
    within2 = sum(abs(r["z"]) <= Z_RELIABLE for r in reliable)
    over3 = [r for r in reliable if abs(r["z"]) > Z_MAX]
    big_miss = [r for r in reliable if abs(r["miss_kT"]) > MISS_MAX]
    unflagged = [r for r in judged if abs(r["z"]) > Z_MAX and r["verdict"] != "not converged"]
    per_budget = {}
    for label in sorted({r["budget"] for r in rows}):
        b = [r for r in rows if r["budget"] == label]
        bj = [r for r in b if r.get("verdict") is not None]
        per_budget[label] = {
            "runs": len({(r["molecule"], r["seed"]) for r in b}),
            "failed_runs": sum(bool(r.get("failed")) for r in b),
            "numbers": len(bj),
            "reliable": sum(r["verdict"] == "reliable" for r in bj),
            "share_reliable": (sum(r["verdict"] == "reliable" for r in bj) / len(bj))
            if bj
            else None,
        }
    hour = None
    if long_ran:
        long_rows = [r for r in rows if r["budget"] == "long"]
        hour = all(
            r.get("verdict") == "reliable"
            for r in long_rows
            if r["molecule"] in MUST_BE_RELIABLE_AT_HOUR
        )

    def brief(rs):
        return [
            {k: r[k] for k in ("molecule", "budget", "seed", "cv", "df_kT", "err_kT", "z")}
            for r in rs
        ]

    return {
        "runs": len({(r["molecule"], r["budget"], r["seed"]) for r in rows}),
        "numbers_judged": len(judged),
        "reliable_numbers": len(reliable),
        "reliable_share_within_2_sigma": within2 / len(reliable) if reliable else None,
        "target_90pct_within_2_sigma": (within2 / len(reliable) >= SHARE_RELIABLE)
        if reliable
        else None,
        "reliable_over_3_sigma": brief(over3),
        "target_none_reliable_over_3_sigma": not over3,
        "reliable_miss_over_0_5_kT": brief(big_miss),
        "target_no_reliable_miss_over_0_5_kT": not big_miss,
        "misses_over_3_sigma_not_flagged": brief(unflagged),
        "target_every_3_sigma_miss_flagged": not unflagged,
        "misses_over_3_sigma": sum(abs(r["z"]) > Z_MAX for r in judged),
        "per_budget": per_budget,
        "target_hour_adp_and_pro_reliable": hour,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the table of benchmarks/RESULTS.md."""

    def f(v: Any, spec: str = ".2f") -> str:
        return format(v, spec) if _finite(v) else "-"

    out = [
        "| molecule | budget | seed | wall / s | CPU / s | load | CV | dF / kT | stated | "
        "reference | miss | z | verdict | reasons |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("failed"):
            out.append(
                f"| {r['molecule']} | {r['budget']} | {r['seed']} | failed "
                f"(exit {r['exit_code']}) |||||||||||"
            )
            continue
        why = "; ".join(
            x.split(":")[0] if x.startswith("stratum") else x.split(" (")[0]
            for x in r.get("reasons") or []
        )
        out.append(
            f"| {r['molecule']} | {r['budget']} | {r['seed']} | {f(r['wall_s'], '.0f')} | "
            f"{f(r['cpu_s'], '.0f')} | {f(r['load_before'], '.1f')} | {r['cv']} | "
            f"{f(r['df_kT'])} | {f(r['err_kT'])} | {f(r['reference_kT'])} +- "
            f"{f(r['reference_err_kT'])} | {f(r['miss_kT'])} | {f(r['z'], '.1f')} | "
            f"{r['verdict']} | {why[:120]} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--molecules", nargs="+", default=list(DEFAULT_MOLECULES))
    p.add_argument("--short", default="2m")
    p.add_argument("--short-seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    p.add_argument("--short-molecules", nargs="+", default=None, help="default --molecules")
    p.add_argument("--medium", default="6m")
    p.add_argument("--medium-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--medium-molecules", nargs="+", default=None, help="default --molecules")
    p.add_argument("--long", default="60m")
    p.add_argument("--long-seeds", type=int, nargs="*", default=[])
    p.add_argument("--long-molecules", nargs="+", default=list(MUST_BE_RELIABLE_AT_HOUR))
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose boltzgen runs")
    p.add_argument("--commit", default=None)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the rows as a table too")
    args = p.parse_args()
    args.short_molecules = args.short_molecules or args.molecules
    args.medium_molecules = args.medium_molecules or args.molecules
    given = args.molecules + args.short_molecules + args.medium_molecules + args.long_molecules
    unknown = set(given) - set(REFERENCES)
    if unknown:
        p.error(f"no reference for {sorted(unknown)}; known: {sorted(REFERENCES)}")
    code = args.code.resolve()
    env = {**os.environ, "PYTHONPATH": str(code)}
    ctx = {"python": args.python, "code": code, "env": env, "commit": _commit(code, args.commit)}
    ctx["cores"] = not args.summarize_only and _has_cores(args.python, env)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        for label, budget, seed, mol in _plan(args):
            _run_one(mol, label, budget, seed, out / "runs" / f"{mol}-{label}-s{seed}", ctx)
    rows: list[dict[str, Any]] = []  # every finished run under out/, this plan's or not
    for run_dir in sorted((out / "runs").glob("*-s*")):
        if (run_dir / "run.json").exists() or (run_dir / "summary.json").exists():
            for row in _rows(run_dir, _record(run_dir, ctx)):
                _emit(row)
                rows.append(row)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "commit": ctx["commit"],
        "molecules": args.molecules,
        "budgets": {"short": args.short, "medium": args.medium, "long": args.long},
        "cores_option": ctx["cores"],
        "load_average_range": [
            min((r["load_before"] for r in rows if r["load_before"] is not None), default=None),
            max((r["load_after"] for r in rows if r["load_after"] is not None), default=None),
        ],
        "core_minutes": sum(r["cpu_s"] or 0.0 for r in _per_run(rows)) / 60.0,
        "wall_minutes": sum(r["wall_s"] for r in _per_run(rows)) / 60.0,
        **targets(rows, long_ran=any(r["budget"] == "long" for r in rows)),
    }
    if not args.long_seeds:
        summary["long_not_run"] = (
            "one-hour runs: "
            + shlex.join([sys.executable, "benchmarks/coverage.py", "--out", str(out)])
            + " --code . --short-seeds --medium-seeds --long-seeds 0 1"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.markdown:
        print(markdown(rows))
    _emit({"summary": summary})


if __name__ == "__main__":
    main()
