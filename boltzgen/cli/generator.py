"""``boltzgen train | sample | free-energy | demo``: the Boltzmann-generator workflow."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from boltzgen.cli.options import bad_input_exits, fmt, fraction_progress
from boltzgen.generator.config import FlowConfig, TrainConfig


def _interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"expected 'low,high' in radians, got {text!r}") from exc
    return lo, hi


def _default(cls, name: str):
    """A config field's default, so each CLI default is the one written in the config."""
    return cls.model_fields[name].get_default(call_default_factory=True)


def _refine(gen, samples, out: Path, seconds: float, seed: int) -> tuple[Any, dict]:
    """Stratified refinement for ``seconds`` with a progress bar; writes refined.h5. Returns
    (the refined samples, the refinement's summary)."""
    from boltzgen.refinement.planning import refine_within

    with fraction_progress("refine", width=50) as progress:
        refined, rs = refine_within(
            gen,
            samples,
            seconds,
            seed=seed,
            progress=progress,
        )
    refined.save(Path(out) / "refined.h5")
    typer.echo(
        f"refined {rs['n_samples']} samples ({rs['n_energy_evals']:,} energy evaluations, "
        f"{rs['seconds']:.0f} s): ESS {100 * rs['ess']:.1f} % -> {Path(out) / 'refined.h5'}"
    )
    return refined, rs


def train_cmd(
    data: Annotated[Path, typer.Argument(help="MD HDF5 file written by `boltzgen simulate`.")],
    out: Annotated[Path, typer.Option(help="Output directory (model.pt, plots).")] = Path(
        "bg-model"
    ),
    flow: Annotated[str, typer.Option(help="smooth or spline.")] = _default(FlowConfig, "flow"),
    loss: Annotated[
        str, typer.Option(help="nll, kl, mixed, force or anneal (energy + data NLL).")
    ] = _default(TrainConfig, "loss"),
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = _default(
        TrainConfig, "epochs"
    ),
    batch_size: Annotated[int, typer.Option(help="Frames per step.")] = _default(
        TrainConfig, "batch_size"
    ),
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = _default(TrainConfig, "lr"),
    layers: Annotated[int, typer.Option(help="Coupling layers.")] = _default(
        FlowConfig, "n_layers"
    ),
    hidden: Annotated[str, typer.Option(help="Conditioner widths, e.g. 64,64.")] = ",".join(
        str(h) for h in _default(FlowConfig, "hidden")
    ),
    components: Annotated[int, typer.Option(help="Smooth-mixture components.")] = _default(
        FlowConfig, "n_components"
    ),
    bins: Annotated[int, typer.Option(help="Spline bins.")] = _default(FlowConfig, "n_bins"),
    tails: Annotated[
        str, typer.Option(help="none or logistic (soft bounds; for flow-driven MD).")
    ] = _default(FlowConfig, "tails"),
    margin: Annotated[float, typer.Option(help="Bounds margin, fraction of data range.")] = (
        _default(FlowConfig, "margin")
    ),
    time_limit: Annotated[float | None, typer.Option(help="Stop after this many s.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights and data split.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    balance_cv: Annotated[
        str | None, typer.Option(help="Weight frames by states of this CV (e.g. phi).")
    ] = None,
    balance_state: Annotated[
        list[str] | None, typer.Option(help="State 'lo,hi' rad of --balance-cv (repeatable).")
    ] = None,
    balance_share: Annotated[
        list[float] | None, typer.Option(help="Share of the frames' weight per state.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any other training option FIELD=VALUE (repeatable), e.g. anneal_start=3, "
            "data_weight=0.5, anneal_samples=8192 (see TrainConfig).",
        ),
    ] = None,
) -> None:
    """Train a Boltzmann generator on MD data (the system is read from the data file).

    With --balance-cv phi --balance-state 0,3.1416 --balance-share 0.05, frames with phi > 0
    carry 5 % of the weight, whatever their share in the data (proposal shaping; importance
    weights remove the bias)."""
    import torch

    from boltzgen.generator.config import BalanceConfig, make_config
    from boltzgen.generator.workflow import train_model
    from boltzgen.md import load_md

    torch.set_num_threads(threads)
    with bad_input_exits():
        architecture = make_config(
            FlowConfig,
            flow=flow,
            n_layers=layers,
            hidden=_widths(hidden),
            n_components=components,
            n_bins=bins,
            seed=seed,
            tails=tails,
            margin=margin,
        )
        train = make_config(
            TrainConfig,
            {"loss": loss, "epochs": epochs, "batch_size": batch_size, "lr": lr}
            | {"time_limit": time_limit, "seed": seed},
            **_train_options(set_ or ()),  # --set wins over the options above
        )
        balance = (
            make_config(
                BalanceConfig,
                cv=balance_cv,
                states=[_interval(s) for s in balance_state or ()],
                shares=list(balance_share or ()),
            )
            if balance_cv
            else None
        )
        md = load_md(data)
        with fraction_progress("train") as progress:
            _, summary = train_model(
                md.system(),
                md,
                out,
                architecture=architecture,
                train=train,
                checkpoint=Path(out) / "checkpoint.pt",
                progress=progress,
                balance=balance,
            )
    typer.echo(
        f"trained {summary['flow']} flow ({summary['n_parameters']:,} parameters, "
        f"{summary['epochs_run']} epochs, {summary['stop_reason']}): best validation NLL "
        f"{summary['best_val_nll']:.3f}; model in {Path(out) / 'model.pt'}"
    )


def _train_options(items: Sequence[str]) -> dict[str, Any]:
    """``["anneal_start=3", "weights={\"nll\": 1}"]`` -> TrainConfig overrides; values are
    JSON when they parse as JSON, else strings (TrainConfig validates them)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"expected widths like '64,64', got {text!r}") from exc


def sample_cmd(
    model: Annotated[Path, typer.Argument(help="model.pt written by `boltzgen train`.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 10_000,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bg-samples"),
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    refine_seconds: Annotated[
        float,
        typer.Option(help="Then refine by stratified SMC for this many seconds (refined.h5)."),
    ] = 0.0,
) -> None:
    """Draw weighted samples (samples.h5 opens with mdtraj) and print the ESS; with
    --refine-seconds also refine them toward the Boltzmann distribution (refined.h5)."""
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import sample_to_files

    with bad_input_exits():
        gen = BoltzmannGenerator.load(model)
        with fraction_progress("sample") as progress:
            samples, summary = sample_to_files(
                gen,
                n,
                out,
                seed=seed,
                progress=progress,
            )
    typer.echo(
        f"{summary['n_samples']} samples, ESS {100 * summary['ess']:.2f} % "
        f"({summary['n_infinite_energy']} with infinite energy) -> {Path(out) / 'samples.h5'}"
    )
    if refine_seconds > 0:
        with bad_input_exits():
            _, rs = _refine(gen, samples, out, refine_seconds, seed)
        for name, fe in rs["free_energies"].items():
            typer.echo(f"dF {name} = {fmt(fe['df_kT'])} +- {fmt(fe['err_kT'])} kT (refined)")


def free_energy_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            help="model.pt written by `boltzgen train` (draws -n samples), or a samples.h5 "
            "written by `boltzgen sample` (reweights those)."
        ),
    ],
    cv: Annotated[str, typer.Option(help="Named dihedral: phi, psi, omega, chi1.")] = "phi",
    state_a: Annotated[str, typer.Option(help="Interval of state A, 'lo,hi' rad.")] = "0,3.14159",
    state_b: Annotated[str, typer.Option(help="Interval of state B.")] = "-3.14159,0",
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 10_000,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 200,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bg-free-energy"),
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """dF = F(A) - F(B) in kT with a bootstrap error, from reweighted flow samples."""
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import free_energy_report, sample_to_files
    from boltzgen.samples import Samples

    with bad_input_exits():
        if model.suffix in (".h5", ".hdf5"):
            samples = Samples.load(model)
            cv_source = samples.topology
        else:
            gen = BoltzmannGenerator.load(model)
            samples, _ = sample_to_files(gen, n, out, seed=seed)
            cv_source = gen.system
        s = free_energy_report(
            samples,
            cv_source,
            out,
            cv=cv,
            state_a=_interval(state_a),
            state_b=_interval(state_b),
            n_bootstrap=bootstrap,
            seed=seed,
        )
    typer.echo(
        f"dF = F({cv} in A) - F({cv} in B) = {s['df_kT']:.2f} +- {s['df_err_kT']:.2f} kT "
        f"(ESS {100 * s['ess']:.2f} % of {s['n_samples']})"
    )


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Output directory for model, samples, plots.")] = Path(
        "demo-out"
    ),
    data: Annotated[
        Path | None, typer.Option(help="MD data (default: shipped ADP vacuum REMD set).")
    ] = None,
    minutes: Annotated[float, typer.Option(help="Training time budget in minutes.")] = 3.0,
    n: Annotated[int, typer.Option("-n", help="Number of samples per flow.")] = 20_000,
    refine_seconds: Annotated[
        float, typer.Option(help="Time for stratified refinement, s (0: no refinement).")
    ] = 60.0,
    flow: Annotated[str, typer.Option(help="smooth or spline.")] = "smooth",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    flows: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Independently trained flows, each with 1/n of the training and refinement "
            "time; dF is their mean with an error that includes their spread, with a verdict.",
        ),
    ] = 2,
) -> None:
    """Small end-to-end run on alanine dipeptide: train independent flows (phi > 0 frames
    given a 5 % share), sample, refine by backbone state, free energies with a verdict
    (reliable or not converged, with reasons), plots."""
    from boltzgen.cores import torch_threads
    from boltzgen.paths import data_file

    with torch_threads(1):  # as boltzgen run: a second thread slowed these small flows
        _demo(data or data_file(_DEMO_DATA), out, flow, minutes, n, refine_seconds, flows, seed)


def _demo(
    path: Path,
    out: Path,
    flow: str,
    minutes: float,
    n: int,
    refine_seconds: float,
    flows: int,
    seed: int,
) -> None:
    from boltzgen.md import load_md

    md = load_md(path)
    system = md.system()
    typer.echo(f"data: {path} ({md.trajectory.n_frames} frames, {system.n_atoms} atoms)")
    runs = []
    for k in range(flows):  # flow 1 writes into out/, the others into out/flow<k>/
        where = out if k == 0 else out / f"flow{k + 1}"
        label = f"flow {k + 1}/{flows}" if flows > 1 else "flow"
        opts = {"flow": flow, "seed": seed + 7919 * k, "label": label}
        runs.append(_demo_flow(system, md, where, minutes / flows, n, refine_seconds / flows, opts))
    _demo_verdict(system, md, runs, seed)
    typer.echo(
        "reference (twelve 2-D metadynamics walkers, benchmarks/RESULTS.md): 3.61 +- 0.05 kT"
    )
    typer.echo(f"plots and files in {out}/")


def _demo_flow(
    system: Any,
    md: Any,
    out: Path,
    minutes: float,
    n: int,
    refine_seconds: float,
    opts: dict[str, Any],
) -> dict[str, Any]:
    """One independently trained flow of the demo: trained, sampled, refined; its dF(phi:2)
    (from the strata after refinement) and the samples it was computed from."""
    import warnings

    from boltzgen.generator.config import BalanceConfig
    from boltzgen.generator.workflow import free_energy_report, sample_to_files, train_model

    seed, label = opts["seed"], opts["label"]
    with fraction_progress(f"train {label}") as progress:
        gen, ts = train_model(
            system,
            md,
            out,
            architecture={"flow": opts["flow"], "seed": seed},
            train={"epochs": 200, "time_limit": 60 * minutes, "seed": seed, "patience": 20},
            progress=progress,
            balance=BalanceConfig(),
        )
    typer.echo(
        f"{label}: trained {ts['epochs_run']} epochs in {ts['wall_time_s']:.0f} s, "
        f"best validation NLL {ts['best_val_nll']:.2f}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clashing draws are counted in the verdict instead
        samples, ss = sample_to_files(gen, n, out, seed=seed, reference=md.trajectory.xyz)
    fe = free_energy_report(samples, system, out, cv="phi", seed=seed, reference=md.trajectory)
    typer.echo(
        f"{label}: ESS {100 * ss['ess']:.2f} % of {ss['n_samples']} samples, "
        f"dF = F(phi > 0) - F(phi < 0) = {fmt(fe['df_kT'])} +- {fmt(fe['df_err_kT'])} kT"
    )
    run = {"samples": samples, "final": samples, "df": fe["df_kT"], "err": fe["df_err_kT"]}
    if refine_seconds > 0:
        refined, rs = _refine(gen, samples, out, refine_seconds, seed)
        fe_r = rs["free_energies"]["phi:2"]
        typer.echo(f"{label}: dF = {fmt(fe_r['df_kT'])} +- {fmt(fe_r['err_kT'])} kT (refined)")
        run.update(final=refined, df=fe_r["df_kT"], err=fe_r["err_kT"])
    return run


def _demo_verdict(system: Any, md: Any, runs: list[dict[str, Any]], seed: int) -> None:
    """The demo's number (the flows' mean, error max(stated, spread)) and its verdict from the
    first flow's weights per backbone state, the data's states and dF, the clash fraction and
    the flows' agreement: what ``boltzgen run`` judges."""
    import numpy as np

    from boltzgen.analysis import free_energy_difference
    from boltzgen.cv import backbone_dihedrals, backbone_state_labels
    from boltzgen.diagnostics import combine_estimates, diagnose, verdict
    from boltzgen.samples import clash_fraction

    values = [float(r["df"]) for r in runs]
    errors = [float(r["err"]) for r in runs]
    finite = all(math.isfinite(x) for x in values + errors)
    value, error = values[0], errors[0]
    if len(runs) > 1 and finite:
        c = combine_estimates(values, errors)
        value, error = c.value, c.error
    data = md.trajectory.xyz
    phi = backbone_dihedrals(system)["phi:2"]
    dd, de = free_energy_difference(
        data, phi, (0.0, math.pi), (-math.pi, 0.0), seed=seed, block_size=max(1, len(data) // 50)
    )
    final = runs[0]["final"]
    if not np.isfinite(final.log_weights).any() or not math.isfinite(value):
        typer.echo(f"dF = {fmt(value)} kT: not converged")
        typer.echo("  because no finite estimate: the flow's samples carry no weight there")
        return
    d = diagnose(
        final.log_weights,
        value,
        error,
        labels=backbone_state_labels(system, final.positions)[0],
        data_labels=backbone_state_labels(system, data)[0],
        data_estimate=(dd, de) if math.isfinite(dd) and math.isfinite(de) else None,
        independent=(values, errors) if len(runs) > 1 and finite else None,
        clash_fraction=clash_fraction(runs[0]["samples"], system.topology)["clash_fraction"],
    )
    v = verdict(d)
    each = ", ".join(f"{fmt(x)} +- {fmt(e)}" for x, e in zip(values, errors, strict=True))
    how = f" (mean of {len(runs)} independent flows: {each})" if len(runs) > 1 else ""
    typer.echo(f"dF = {fmt(value)} +- {fmt(error)} kT{how}: {v.status}")
    for reason in v.reasons:
        typer.echo(f"  because {reason}")
    for advice in v.advice:
        typer.echo(f"  to do: {advice}")


_DEMO_DATA = "adp-vacuum-remd.h5"  # 300 K replica of REMD: phi > 0 in proportion
