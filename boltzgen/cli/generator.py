"""``boltzgen train | sample | free-energy``: the Boltzmann-generator workflow."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from boltzgen.cli.options import bad_input_exits, fmt, fraction_progress, no_progress
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


def _refine(
    gen, samples, out: Path, seconds: float, seed: int, say=typer.echo, bars: bool = True
) -> tuple[Any, dict]:
    """Stratified refinement for ``seconds`` with a progress bar (none when not ``bars``);
    writes refined.h5; ``say`` prints. Returns (the refined samples, the refinement's
    summary)."""
    from boltzgen.refinement.planning import refine_within

    with fraction_progress("refine", width=50) if bars else no_progress() as progress:
        refined, rs = refine_within(
            gen,
            samples,
            seconds,
            seed=seed,
            progress=progress,
        )
    refined.save(Path(out) / "refined.h5")
    say(
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
    masks: Annotated[
        str, typer.Option(help="Coupling schedule: alternate, grouped or hierarchical.")
    ] = _default(FlowConfig, "masks"),
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
            masks=masks,
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
    model: Annotated[
        list[Path],
        typer.Argument(
            help="model.pt written by `boltzgen train`; several flows of one molecule are "
            "sampled as their equal-weight mixture (n / K draws each, every draw weighted "
            "against the whole mixture)."
        ),
    ],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 10_000,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bg-samples"),
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    refine_seconds: Annotated[
        float,
        typer.Option(help="Then refine by stratified SMC for this many seconds (refined.h5)."),
    ] = 0.0,
) -> None:
    """Draw weighted samples (samples.h5 opens with mdtraj) and print the ESS; with
    --refine-seconds also refine them toward the Boltzmann distribution (refined.h5). Several
    models (independently trained flows of one molecule) are one proposal, their mixture."""
    from boltzgen.generator.mixture import FlowMixture
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import sample_to_files

    with bad_input_exits():
        gens = [BoltzmannGenerator.load(m) for m in model]
        gen = gens[0] if len(gens) == 1 else FlowMixture(gens)
        with fraction_progress("sample") as progress:
            samples, summary = sample_to_files(
                gen,
                n,
                out,
                seed=seed,
                progress=progress,
            )
    typer.echo(
        (f"mixture of {len(gens)} flows: " if len(gens) > 1 else "")
        + f"{summary['n_samples']} samples, ESS {100 * summary['ess']:.2f} % "
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
