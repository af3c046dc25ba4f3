"""The ``boltzgen`` command line (typer). Each command group lives in its own module and is
registered here, so library code never imports the CLI."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="boltzgen",
    help="Boltzmann generators: MD data, training, sampling, free energies, and the REST service.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Boltzmann generators from the command line."""


@app.command()
def version() -> None:
    """Print the boltzgen version."""
    from boltzgen import __version__

    typer.echo(__version__)


def main() -> None:
    app()


from boltzgen.cli.simulate import simulate_cmd  # noqa: E402

app.command("simulate")(simulate_cmd)

from boltzgen.cli import service as _service  # noqa: E402

app.command("serve")(_service.serve)
app.command("worker")(_service.worker)
app.command("submit")(_service.submit)
app.command("status")(_service.status)
app.command("wait")(_service.wait_cmd)
app.command("download")(_service.download)

from boltzgen.cli import keys as _keys  # noqa: E402

app.add_typer(_keys.app, name="keys")

from boltzgen.cli import demo as _demo  # noqa: E402
from boltzgen.cli import generator as _generator  # noqa: E402

app.command("train")(_generator.train_cmd)
app.command("sample")(_generator.sample_cmd)
app.command("free-energy")(_generator.free_energy_cmd)
app.command("demo")(_demo.demo_cmd)

from boltzgen.cli import enhanced as _enhanced  # noqa: E402

app.command("remd")(_enhanced.remd_cmd)
app.command("umbrella")(_enhanced.umbrella_cmd)
app.command("metad")(_enhanced.metad_cmd)

from boltzgen.cli.run import run_cmd  # noqa: E402

app.command("run")(run_cmd)

from boltzgen.cli.cg import app as _cg_app  # noqa: E402

app.add_typer(_cg_app, name="cg")
