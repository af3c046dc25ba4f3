"""The analysis stage: dF(CV >= 0 vs < 0) per backbone dihedral from the samples (from the
strata's log Z after a stratified refinement) and from the training data alone, free-energy
profiles, Ramachandran plots per residue, the log-weight histogram and the ESS curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from boltzgen import plots
from boltzgen.analysis import (
    ess_curve,
    free_energy_difference,
    free_energy_surface,
    state_free_energies,
)
from boltzgen.cv import backbone_dihedrals, backbone_state_labels, parse_cv_name, state_dihedrals
from boltzgen.diagnostics import (
    Verdict,
    combine_estimates,
    cut_is_degenerate,
    data_check,
    diagnose,
    recommend,
    verdict,
)
from boltzgen.errors import InputError
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.pipeline.records import Clock
from boltzgen.refinement.planning import strata_free_energy, strata_state_free_energies

__all__ = ["analysis_stage", "resolve_cvs"]

_POSITIVE, _NEGATIVE = (0.0, math.pi), (-math.pi, 0.0)


def resolve_cvs(system, cvs: Sequence[str] | None) -> list[str]:
    """The backbone dihedral names (``"phi:2"``, ...) that ``cvs`` selects in ``system``:
    ``None`` -> every residue's state dihedral (phi; psi for proline, whose phi is pinned);
    ``"psi"`` -> every residue's psi; ``"phi:2"`` -> that one.
    Raises :class:`InputError` naming the molecule's dihedrals when one is missing."""
    parsed = {n: parse_cv_name(n) for n in backbone_dihedrals(system)}
    names = list(parsed)
    if cvs is None:
        return list(state_dihedrals(system))
    out: list[str] = []
    for cv in cvs:
        angle, residue = parse_cv_name(cv)
        hits = [n for n, (a, r) in parsed.items() if a == angle and residue in (None, r)]
        if not hits:
            raise InputError(
                f"the molecule has no dihedral {cv!r}; it has {', '.join(names) or 'none'}"
            )
        out += [h for h in hits if h not in out]
    return out


def _plot_ess_curve(curve: dict[str, list], path: Path) -> Path:
    fig = Figure(figsize=(5.5, 3.8))  # no pyplot: no global figure state, any backend
    ax = fig.subplots()
    ax.plot(curve["n"], np.asarray(curve["ess"]) * 100.0, marker="o", ms=3)
    ax.set(xscale="log", xlabel="samples drawn", ylabel="ESS / %", title="ESS vs samples drawn")
    ax2 = ax.twinx()
    ax2.plot(curve["n"], curve["n_eff"], color="tab:orange", ls="--", label="n_eff")
    ax2.set(ylabel="n_eff")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _finite_pair(value: Any, error: Any) -> tuple[float, float] | None:
    """(value, error) when both are finite numbers (the data's dF is None or inf when the
    data never visit one side), else None: then there is nothing to compare."""
    ok = all(isinstance(x, int | float) and math.isfinite(x) for x in (value, error))
    return (float(value), float(error)) if ok else None


def _degenerate_cut(samples) -> bool:
    """Whether a refinement (or a stratum of it, top-ups included) behind ``samples`` stopped
    at its time limit with a jump whose weights cannot be trusted
    (:func:`~boltzgen.diagnostics.cut_is_degenerate`); plain flow draws: False."""
    h = getattr(samples, "history", None) or {}
    rows = [r for r in h.get("strata") or [] if isinstance(r, dict)]
    if not rows:  # one refinement: one row, in the strata's shape
        cuts = [h["cut"]] if h.get("cut") else []
        rows = [{"stopped_at_time_limit": h.get("stopped_at_time_limit"), "cuts": cuts}]
    return any(
        r.get("stopped_at_time_limit")
        and (not r.get("cuts") or any(cut_is_degenerate(c) for c in r["cuts"]))
        for r in rows
    )


class _Analysis:
    """The samples, the training data and the settings the per-dihedral steps share."""

    def __init__(
        self, system, samples, data_positions, data_lw, config, out: Path, clash=None, others=()
    ) -> None:
        self.samples, self.data_positions, self.data_lw = samples, data_positions, data_lw
        self.system = system
        self.config, self.out, self.clash = config, out, clash
        self.others = list(others)  # the other independent flows' final samples
        self.independent: dict[str, tuple[list[float], list[float]]] = {}
        self.implicit_solvent = system.solvent != "vacuum"
        # backbone sign patterns of the samples and of the data: per-stratum k-hat and the
        # flow's mass per state against the data's, for the verdicts
        self.labels = backbone_state_labels(system, samples.positions)[0].astype(str)
        self.data_labels = backbone_state_labels(system, data_positions)[0].astype(str)
        self.data_weights = None if data_lw is None else np.exp(data_lw - np.max(data_lw))
        self.plot_dir = out / "plots"
        self.plot_dir.mkdir(parents=True, exist_ok=True)
        self.dihedrals = backbone_dihedrals(system)
        self.usable = bool(np.isfinite(samples.log_weights).any())
        self.refinement_cut = any(_degenerate_cut(s) for s in [samples, *self.others])
        self.block = max(1, len(data_positions) // 50)
        self.state_names = backbone_state_labels(system, data_positions[:1])[1]
        self.data_label = "REMD data" if data_lw is None else "metadynamics data (reweighted)"
        self.figs: dict[str, Any] = {"ramachandran": {}, "fes": {}}

    def _profile(self, x, values, **kw):
        """1-D FES on the circle with bootstrap errors."""
        return free_energy_surface(
            x,
            cvs=values,
            bins=36,
            range=(-math.pi, math.pi),
            n_bootstrap=min(100, self.config.n_bootstrap),
            seed=self.config.seed,
            **kw,
        )

    def plot(self, name: str, v: np.ndarray, vd: np.ndarray) -> None:
        """The FES along ``name`` and, for a phi with a psi, the residue's Ramachandran plot."""
        s, out = self.samples, self.out
        curves = {}
        if self.usable:
            curves["flow (reweighted)"] = self._profile(s, v)
        curves[self.data_label] = self._profile(
            self.data_positions, vd, block_size=self.block, log_weights=self.data_lw
        )
        path = self.plot_dir / f"fes_{name.replace(':', '_')}.png"
        plots.free_energy_profile(curves, path, xlabel=f"{name} / rad")
        self.figs["fes"][name] = str(path.relative_to(out))
        angle, residue = parse_cv_name(name)
        psi = self.dihedrals.get(f"psi:{residue}") if angle == "phi" else None
        if psi is None:
            return
        panels = {
            self.data_label: (vd, psi(self.data_positions), self.data_lw),
            "flow (unweighted)": (v, psi(s.positions), None),
        }
        if self.usable:
            panels["flow (reweighted)"] = (v, psi(s.positions), s.log_weights)
        path = self.plot_dir / f"ramachandran_{residue}.png"
        plots.ramachandran(panels, path)
        self.figs["ramachandran"][str(residue)] = str(path.relative_to(out))

    def estimate(self, samples, name: str, v: np.ndarray) -> dict[str, Any]:
        """dF(``name`` >= 0 vs < 0) from one set of (refined) samples with its error."""
        cfg = self.config
        if not np.isfinite(samples.log_weights).any():
            return {"df_kT": None, "err_kT": None}
        strata = getattr(samples, "history", {}).get("strata")
        if strata and name in self.state_names:
            # stratified refinement: dF from the strata's log Z (errors: island spread and
            # the binomial error of the proposal masses); the particle bootstrap beside it
            # ignores that descendants of one draw are correlated
            df, err = strata_free_energy(strata, self.state_names.index(name))
            df_b, err_b = free_energy_difference(
                samples, v, _POSITIVE, _NEGATIVE, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed
            )
            return {
                "df_kT": df,
                "err_kT": err,
                "method": "strata log Z",
                "df_reweighted_kT": df_b,
                "err_reweighted_kT": err_b,
            }
        df, err = free_energy_difference(
            samples, v, _POSITIVE, _NEGATIVE, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed
        )
        return {"df_kT": df, "err_kT": err, "method": "reweighted samples (bootstrap)"}

    def free_energy_row(self, name: str, v: np.ndarray, vd: np.ndarray) -> dict[str, Any]:
        """dF(``name`` >= 0 vs < 0) from the samples (with several independent flows: their
        mean, the error including their spread) and from the training data."""
        s, cfg = self.samples, self.config
        angle, residue = parse_cv_name(name)
        row: dict[str, Any] = {"residue": residue, "angle": angle}
        row.update(self.estimate(s, name, v))
        if self.others:
            d = self.dihedrals[name]
            flows = [{k: row[k] for k in ("df_kT", "err_kT")}]
            flows += [
                {k: e[k] for k in ("df_kT", "err_kT")}
                for e in (self.estimate(o, name, d(o.positions)) for o in self.others)
            ]
            row["flows"] = flows
            values = [f["df_kT"] for f in flows]
            errors = [f["err_kT"] for f in flows]
            if all(_finite_pair(x, e) for x, e in zip(values, errors, strict=True)):
                c = combine_estimates(values, errors)
                row.update(df_kT=c.value, err_kT=c.error, spread_err_kT=c.spread_error)
                row["method"] = (
                    f"{row.get('method', '')}, mean of {len(flows)} independent flows "
                    "(error: max(stated, spread))"
                )
                self.independent[name] = (values, errors)
        df_d, err_d = free_energy_difference(
            self.data_positions,
            vd,
            _POSITIVE,
            _NEGATIVE,
            n_bootstrap=cfg.n_bootstrap,
            block_size=self.block,
            log_weights=self.data_lw,
        )
        row.update(
            df_data_kT=df_d, err_data_kT=err_d, data_fraction_positive=float(np.mean(vd >= 0))
        )
        halves = self._data_halves(vd)
        if self.usable:
            w = s.normalized_weights
            row["flow_fraction_positive_unweighted"] = float(np.mean(v >= 0))
            row["flow_fraction_positive_weighted"] = float(np.sum(w[v >= 0]))
        row.update(self.judge(name, row, halves))
        return row

    def _data_halves(self, vd: np.ndarray) -> list[tuple[float, float] | None]:
        """dF from the first and the second half of the data frames (in time order), each
        with its block-bootstrap error: the data's own convergence check."""
        half = len(vd) // 2
        out = []
        for sl in (slice(0, half), slice(half, 2 * half)):
            lw = None if self.data_lw is None else self.data_lw[sl]
            pair = free_energy_difference(
                self.data_positions[sl],
                vd[sl],
                _POSITIVE,
                _NEGATIVE,
                n_bootstrap=self.config.n_bootstrap,
                block_size=max(1, self.block // 2),
                log_weights=lw,
            )
            out.append(_finite_pair(*pair))
        return out

    def judge(
        self, name: str, row: dict[str, Any], halves: list[tuple[float, float] | None]
    ) -> dict[str, Any]:
        """The number's diagnostics (Kish ESS, PSIS k-hat overall and per backbone state,
        particles per state, the flow's mass per state against the data's, data vs samples,
        clash fraction) and its verdict: ``reliable`` or ``not converged`` with reasons and
        advice (boltzgen.diagnostics); the data's own check (its time ``halves``) and which
        estimate to quote (``recommended``)."""
        df, err = row.get("df_kT"), row.get("err_kT")
        data = _finite_pair(row.get("df_data_kT"), row.get("err_data_kT"))
        if not self.usable or df is None or err is None:
            v = Verdict(
                "not converged",
                reasons=["no finite importance weight: the flow's samples carry no estimate"],
                codes=["no_estimate"],
                advice=["raise the budget (longer training and sampling)"],
            )
            check = data_check(*halves)
            return {
                "verdict": v.status,
                "reasons": v.reasons,
                "advice": v.advice,
                "data_check": check.to_dict(),
                "recommended": recommend(None, v, data, check).to_dict(),
            }
        d = diagnose(
            self.samples.log_weights,
            df,
            err,
            labels=self.labels,
            data_labels=self.data_labels,
            data_weights=self.data_weights,
            data_estimate=data,
            clash_fraction=None if self.clash is None else self.clash["clash_fraction"],
            independent=self.independent.get(name),
            refinement_cut=self.refinement_cut,
        )
        v = verdict(d, implicit_solvent=self.implicit_solvent)
        check = data_check(*halves, states=d.states)
        return {
            "k_hat": d.k_hat,
            "ess": d.ess_fraction,
            "verdict": v.status,
            "reasons": v.reasons,
            "advice": v.advice,
            "diagnostics": d.to_dict(),
            "data_check": check.to_dict(),
            "recommended": recommend((df, err), v, data, check).to_dict(),
        }

    def _states_of(self, samples) -> dict[str, dict[str, float]]:
        """-log P of every backbone sign pattern from one set of samples: the strata's log Z
        after a stratified refinement, else the reweighted samples (bootstrap)."""
        strata = getattr(samples, "history", {}).get("strata")
        if strata:
            return strata_state_free_energies(strata)
        labels = backbone_state_labels(self.system, samples.positions)[0]
        cfg = self.config
        return state_free_energies(
            labels, samples.log_weights, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed
        )

    def state_populations(self) -> dict[str, Any]:
        """Every backbone sign pattern's population and free energy -log P (kT) at once: no
        CV to choose. With several independent flows: their mean, the error max(stated,
        spread) (:func:`~boltzgen.diagnostics.combine_estimates`); the data's beside it."""
        if not self.state_names or not self.usable:
            return {"dihedrals": list(self.state_names), "states": []}
        per_flow = [self._states_of(s) for s in [self.samples, *self.others]]
        data = state_free_energies(
            self.data_labels,
            self.data_lw,
            n_bootstrap=self.config.n_bootstrap,
            seed=self.config.seed,
            block_size=self.block,
        )
        rows = []
        for label in sorted(set().union(*per_flow, data)):
            row: dict[str, Any] = {"state": label}
            got = [f[label] for f in per_flow if label in f]
            if len(got) == len(per_flow):
                values = [g["free_energy_kT"] for g in got]
                errors = [g["err_kT"] for g in got]
                if len(got) > 1 and all(math.isfinite(e) for e in errors):
                    c = combine_estimates(values, errors)
                    row.update(free_energy_kT=c.value, err_kT=c.error)
                else:
                    row.update(free_energy_kT=float(np.mean(values)), err_kT=max(errors))
                row["population"] = math.exp(-row["free_energy_kT"])
                if len(got) > 1:
                    row["flows"] = [{k: g[k] for k in ("free_energy_kT", "err_kT")} for g in got]
            else:  # some flow never reached it: no estimate
                row.update(free_energy_kT=None, err_kT=None, population=None)
            d = data.get(label)
            row.update(
                data_population=d["population"] if d else 0.0,
                data_free_energy_kT=d["free_energy_kT"] if d else None,
                data_err_kT=d["err_kT"] if d else None,
            )
            rows.append(row)
        return {"dihedrals": list(self.state_names), "states": rows}

    def weights(self) -> dict[str, list]:
        """The log-weight histogram and the ESS curve (plotted when the weights are usable)."""
        lw = self.samples.log_weights
        plots.log_weight_histogram(
            lw, self.plot_dir / "log_weights.png", ess=self.samples.ess if self.usable else None
        )
        self.figs["log_weights"] = "plots/log_weights.png"
        if not self.usable:
            return {"n": [], "ess": [], "n_eff": []}
        curve = ess_curve(lw)
        _plot_ess_curve(curve, self.plot_dir / "ess_curve.png")
        self.figs["ess_curve"] = "plots/ess_curve.png"
        return curve


def analysis_stage(
    system,
    samples,
    data_positions: np.ndarray,
    data_lw: np.ndarray | None,
    config: PipelineConfig,
    out: Path,
    clock: Clock,
    clash: dict[str, Any] | None = None,
    others: Sequence[Any] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """dF per residue with a verdict each, FES per backbone dihedral, Ramachandran per
    residue, weights, ESS. ``clash``: the clash check of the flow's draws
    (:func:`boltzgen.samples.clash_fraction`). Returns ({"free_energies",
    "state_populations", "ess_curve"}, figures relative to ``out``)."""
    a = _Analysis(system, samples, data_positions, data_lw, config, out, clash, others)
    wanted = resolve_cvs(system, config.cvs)
    names = list(a.dihedrals)
    free: dict[str, Any] = {}
    for i, name in enumerate(names):
        clock("analysis", 0.1 + 0.7 * i / max(1, len(names)), f"free energies {name}")
        v = a.dihedrals[name](samples.positions)
        vd = a.dihedrals[name](data_positions)
        a.plot(name, v, vd)
        if name in wanted:
            free[name] = a.free_energy_row(name, v, vd)
    clock("analysis", 0.8, "backbone state populations")
    states = a.state_populations()
    clock("analysis", 0.85, "weights and ESS curve")
    curve = a.weights()
    return {"free_energies": free, "state_populations": states, "ess_curve": curve}, a.figs
