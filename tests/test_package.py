import subprocess
import sys

import boltzgen


def test_errors_are_typed():
    assert issubclass(boltzgen.MalformedPDBError, boltzgen.BoltzgenError)
    assert issubclass(boltzgen.ShapeError, ValueError)


def test_cli_version():
    out = subprocess.run(
        [sys.executable, "-m", "boltzgen", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == boltzgen.__version__
