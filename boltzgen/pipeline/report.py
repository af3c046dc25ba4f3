"""``report.md``: the run's summary as Markdown (budget and wall time, the training data,
the balance over backbone states, the flow, samples and weights, the refinement, free energies
and figures). Reads only the summary dict, so a report can be rewritten from ``summary.json``."""

from __future__ import annotations

import math
from typing import Any

from boltzgen.pipeline.config import STAGES

__all__ = ["fmt", "report_markdown"]


def fmt(v: Any, spec: str = ".2f") -> str:
    """``v`` formatted, or ``n/a`` for None and non-finite numbers."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _refine_line(r: dict[str, Any]) -> str:
    if r.get("status") != "done":
        return f"Refinement: {r.get('status')}."
    return (
        f"Refinement (stratified SMC by backbone state): {r['n_samples']:,} particles, "
        f"{r['n_levels']} levels at most, {r['n_energy_evals']:,} energy evaluations, "
        f"acceptance {fmt(r.get('acceptance'))}; ESS {fmt(r.get('ess_before'), '.3f')} (flow) "
        f"-> {fmt(r.get('ess'), '.3f')} (refined, variance-equivalent over the strata); "
        f"{r['n_unique_ancestors']:,} distinct flow draws survive."
    )


def leftover_line(lo: dict[str, Any]) -> str | None:
    """One sentence on where the time left after the refinement went (None: none was)."""
    rounds = [r for r in lo.get("rounds", []) if r.get("n_added")]
    if not rounds:
        return None
    where = "; ".join(
        f"flow {r['flow']} stratum `{r['stratum'] or '-'}` +{r['n_added']:,} particles, "
        f"effective {fmt(r['n_effective_before'], '.0f')} -> {fmt(r['n_effective_after'], '.0f')}"
        for r in rounds
    )
    return f"Time left after the refinement: {lo['seconds']:.0f} s to the weakest stratum: {where}."


def _data_section(d: dict[str, Any]) -> list[str]:
    """The report's paragraph on how the training data were made."""
    if d.get("sampler") == "metad":
        crossings = ", ".join(f"{k}: {v}" for k, v in d["sign_changes"].items())
        return [
            "",
            "## Training data: metadynamics with a frozen bias",
            "",
            f"Well-tempered metadynamics over {', '.join(d['dihedrals'])} (bias factor "
            f"{d['bias_factor']:g}) learned a bias for {d['n_learning_steps']:,} steps, then "
            f"{d['n_steps']:,} steps were sampled with it frozen ({d['simulated_ns']:.2f} ns in "
            f"all, calibrated at {d['calibration']['steps_per_second']:,.0f} steps/s): "
            f"{d['n_frames']:,} frames, each weighted exactly by exp(V/kT) (ESS of the weights "
            f"{100 * d['ess']:.0f} %); sign changes along the record: {crossings}.",
            "",
        ]
    lad = d["ladder"]
    acc = ", ".join(fmt(x) for x in d["acceptance"])
    return [
        "",
        "## Training data: temperature replica exchange",
        "",
        f"{lad['n_replicas']} replicas, geometric {lad['t_min_K']:.0f}-{lad['t_max_K']:.0f} K "
        f"(dof {lad['dof']}, neighbour ratio {lad['neighbour_ratio']:.3f}; predicted "
        f"acceptance {lad['predicted_acceptance']:.2f} for a target of "
        f"{lad['target_acceptance']:.2f}). Measured neighbour acceptance: {acc} "
        f"(mean {fmt(d['mean_acceptance'])}).",
        "",
        f"{d['n_steps_per_replica']:,} production steps per replica after "
        f"{d['n_equilibration_steps']:,} equilibration steps "
        f"({d['simulated_ns_per_replica']:.2f} ns per replica, calibrated at "
        f"{d['calibration']['steps_per_second']:,.0f} steps/s); {d['n_frames']:,} frames of "
        f"the {lad['t_min_K']:.0f} K replica, visited by {d['walkers_at_target']} walkers.",
        "",
    ]


def _header(s: dict[str, Any]) -> list[str]:
    mol = s["system"]
    lines = [
        f"# boltzgen run: {mol['name']}",
        "",
        f"{mol['n_atoms']} atoms, {mol['n_residues']} residues, dimension {mol['dim']} "
        f"(3n - 6), solvent {mol['solvent']}, {mol['temperature_K']:g} K, force field "
        f"{', '.join(mol['forcefield'])}.",
        "",
        f"**ESS {100 * (s['ess'] or 0):.2f} %** of {s['n_samples']:,} samples; clash fraction "
        f"{fmt(s['clash']['clash_fraction'], '.4f')}; total wall time "
        f"{s['wall_time_s']['total']:.0f} s of a {s['budget']['total_seconds']:.0f} s budget.",
        "",
        "## Budget and wall time",
        "",
        "| stage | share | budget (s) | wall time (s) | from checkpoint |",
        "|---|---|---|---|---|",
    ]
    for stage in STAGES:
        b = s["budget"]["split"].get(stage, {})
        st = s["stages"].get(stage, {})
        lines.append(
            f"| {stage} | {fmt(b.get('share'), '.0%') if b else '-'} | "
            f"{fmt(b.get('seconds'), '.0f') if b else '-'} | "
            f"{fmt(s['wall_time_s'].get(stage), '.1f')} | "
            f"{'yes' if st.get('resumed') else 'no'} |"
        )
    lines.append("")
    lines.append("The system build is counted in the analysis share (the rest of the budget).")
    return lines


def _balance_section(bal: dict[str, Any]) -> list[str]:
    lines = [
        "Frames are balanced over the sign patterns of every residue's state dihedral "
        f"({', '.join(bal['dihedrals']) or 'no backbone'}; phi, psi for proline; "
        "+ is angle >= 0); every populated "
        f"pattern gets at least {bal['min_share']:.0%} of the training weight:",
        "",
        "| pattern | frames | data share | weight share |",
        "|---|---|---|---|",
    ]
    for row in bal["states"]:
        lines.append(
            f"| `{row['state'] or '-'}` | {row['n_frames']} | {row['data_share']:.4f} | "
            f"{row['weight_share']:.4f}{'' if row['populated'] else ' (too few frames)'} |"
        )
    return lines


def _flow_and_samples(s: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    fl = s["flow"]
    lines = [
        "",
        "## Flow",
        "",
        f"{fl['flow']} flow, {fl['n_layers']} coupling layers, conditioners "
        f"{' x '.join(str(h) for h in fl['hidden'])}, {fl['n_parameters']:,} parameters, "
        f"lr {fl['lr']:g} (rule for dim {fl['dim']}: {fl['rule']['n_layers']} layers, "
        f"{list(fl['rule']['hidden'])}). Trained {fl['epochs_run']} epochs in "
        f"{fmt(fl.get('wall_time_s'), '.0f')} s (stop: {fl['stop_reason']}); best validation "
        f"NLL {fmt(fl['best_val_nll'])}.",
        "",
        "![training](training.png)",
        "",
        "## Samples and weights",
        "",
        f"Flow: {s['sampling']['n_samples']:,} draws, ESS "
        f"{100 * (s['sampling'].get('ess') or 0):.2f} % (n_eff "
        f"{fmt(s['sampling'].get('n_eff'), '.0f')}). Clash fraction "
        f"{fmt(s['clash']['clash_fraction'], '.4f')}: overlapping atoms (non-bonded, beyond "
        f"1-3, closer than {s['clash']['distance_nm']} nm) "
        f"{fmt(s['clash']['overlap_fraction'], '.4f')}, infinite energy "
        f"{fmt(s['clash']['infinite_energy_fraction'], '.4f')}.",
        "",
        _refine_line(s["refine"]),
        "",
        f"![log-weights]({figs['log_weights']})",
    ]
    if mix := s.get("flows_mixture"):
        lines[-1:-1] = [
            f"The {mix['n_flows']} independent flows' {mix['n_samples']:,} draws weighed as one "
            f"sample of their mixture: flow ESS {100 * (mix['flow_ess'] or 0):.2f} % (each flow "
            "alone: " + ", ".join(f"{100 * (e or 0):.2f} %" for e in mix["flow_ess_each"]) + ").",
            "",
        ]
    if (left := leftover_line(s.get("leftover_spent") or {})) is not None:
        lines[-1:-1] = [left, ""]
    if s["refine"].get("strata"):
        lines += [
            "",
            "| stratum | particles | proposal mass | log Z | rel. err | levels | ESS | evals |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in s["refine"]["strata"]:
            lines.append(
                f"| `{r['label'] or '-'}` | {r['n']} | {fmt(r['mass'], '.4f')} | "
                f"{fmt(r['log_z'])} | {fmt(r['log_z_err'], '.3f')} | {r['n_levels']} | "
                f"{fmt(r['ess'], '.3f')} | {r['n_energy_evals']:,} |"
            )
    if "ess_curve" in figs:
        lines += ["", f"![ESS curve]({figs['ess_curve']})"]
    return lines


def _free_energies(s: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Free energies",
        "",
        "dF = F(CV >= 0) - F(CV < 0) in kT. Refined: from the log Z of the refinement's "
        "strata (one SMC run per backbone state; error from the islands' spread and the "
        "proposal masses); otherwise the flow samples reweighted (bootstrap error). Data: "
        "the training frames alone (REMD: the target replica; metadynamics: reweighted by "
        "exp(V/kT); block-bootstrap error). Quote: the samples' number when reliable, "
        "otherwise the data's when its two time halves agree, it visits every state the "
        "samples weight and its error is no larger.",
        "",
        "| CV | dF / kT | verdict | k-hat | method | dF data / kT | CV >= 0 in data (frames) "
        "| quote / kT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in s["free_energies"].items():
        rec = row.get("recommended") or {}
        quote = (
            f"{fmt(rec['df_kT'])} +- {fmt(rec['err_kT'])} ({rec['source']})"
            if rec.get("source") in ("samples", "data")
            else "-"
        )
        lines.append(
            f"| {name} | {fmt(row['df_kT'])} +- {fmt(row['err_kT'])} | "
            f"**{row.get('verdict', '-')}** | {fmt(row.get('k_hat'))} | "
            f"{row.get('method', '-')} | "
            f"{fmt(row['df_data_kT'])} +- {fmt(row['err_data_kT'])} | "
            f"{row['data_fraction_positive']:.4f} | {quote} |"
        )
    if not s["free_energies"]:
        lines.append("| (no backbone dihedral) | | | | | | | |")
    lines += _verdict_reasons(s["free_energies"])
    if figs["ramachandran"]:
        lines += ["", "### Ramachandran plots", ""]
        lines += [f"![residue {k}]({v})" for k, v in figs["ramachandran"].items()]
    if figs["fes"]:
        lines += ["", "### Free-energy profiles (bands: bootstrap errors)", ""]
        lines += [f"![{k}]({v})" for k, v in figs["fes"].items()]
    return lines


def _state_populations(states: dict[str, Any] | None) -> list[str]:
    """Every backbone sign pattern's population from the samples against the data's."""
    if not states or not states.get("states"):
        return []
    names = ", ".join(states["dihedrals"])
    lines = [
        "",
        "## Backbone state populations",
        "",
        f"One character per state dihedral ({names}): + is angle >= 0. F = -log P in kT "
        "(each flow's populations sum to 1); from the strata's log Z after refinement (mean "
        "of the independent flows' F, error max(stated, spread)); data: the training frames "
        "alone.",
        "",
        "| state | population | F / kT | population in data | F data / kT |",
        "|---|---|---|---|---|",
    ]
    for r in states["states"]:
        lines.append(
            f"| `{r['state']}` | {fmt(r['population'], '.4f')} | "
            f"{fmt(r['free_energy_kT'])} +- {fmt(r['err_kT'])} | "
            f"{fmt(r['data_population'], '.4f')} | "
            f"{fmt(r['data_free_energy_kT'])} +- {fmt(r['data_err_kT'])} |"
        )
    return lines


def _verdict_reasons(free_energies: dict[str, Any]) -> list[str]:
    """Why each number that is not converged is not, and what to do."""
    lines: list[str] = []
    for name, row in free_energies.items():
        if row.get("verdict") != "not converged":
            continue
        lines += ["", f"**{name}: not converged.**"]
        lines += [f"- {r}" for r in row.get("reasons", [])]
        lines += [f"- what to do: {a}" for a in row.get("advice", [])]
        if rec := row.get("recommended"):
            whose = {"samples": "the samples'", "data": "the data's"}.get(rec["source"], "no")
            lines.append(f"- quoted: {whose} number, because {rec['why']}")
    return lines


def report_markdown(summary: dict[str, Any], figs: dict[str, Any]) -> str:
    """The text of ``report.md`` for the run's ``summary`` and its figures ``figs`` (paths
    relative to the output directory)."""
    s = summary
    lines = _header(s)
    lines += _data_section(s["data"])
    lines += _balance_section(s["balance"])
    lines += _flow_and_samples(s, figs)
    lines += _free_energies(s, figs)
    lines += _state_populations(s.get("state_populations"))
    if s.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in s["warnings"]]
    return "\n".join(lines) + "\n"
