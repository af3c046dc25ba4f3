"""Job parameters: typed configs are the single source of defaults, bad input fails at submit."""

from __future__ import annotations

import math

import pytest

from boltzgen.errors import JobParamsError
from boltzgen.generator.config import FlowConfig, TrainConfig
from boltzgen.jobs import get_kind, validate_params
from boltzgen.systems import System


@pytest.fixture(scope="module")
def spec() -> dict:
    return System.alanine_dipeptide().to_spec()


def test_train_params_defaults_are_the_configs(spec: dict) -> None:
    p = validate_params("train", {"system": spec, "data": "artifact-id"})
    for cls in (FlowConfig, TrainConfig):
        for name, value in cls().model_dump().items():
            assert getattr(p, name) == value, name
    schema = get_kind("train").client_schema()["properties"]
    assert schema["n_layers"]["default"] == FlowConfig().n_layers
    assert schema["lr"]["default"] == TrainConfig().lr
    assert "system" not in schema


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("train", {"data": "a", "weights": {"nll": math.nan}}, "weights"),
        ("train", {"data": "a", "weights": {"bogus": 1.0}}, "weights"),
        ("train", {"data": "a", "hidden": [0]}, "hidden"),
        ("train", {"data": "a", "n_layers": 1000}, "n_layers"),
        ("train", {"data": "a", "flow": "glow"}, "flow"),
        ("energy", {"positions": [[[0.0, 0.0, 0.0]] * 21]}, "positions"),
        ("energy", {"positions": [[[math.nan, 0.0, 0.0]] * 22]}, "positions"),
        ("free_energy", {"model": "m", "state_a": [math.nan, 1.0]}, "state_a"),
        ("free_energy", {"model": "m", "state_b": [1.0, 1.0]}, "state_b"),
    ],
)
def test_bad_parameters_fail_at_submit_naming_the_field(
    spec: dict, kind: str, params: dict, field: str
) -> None:
    with pytest.raises(JobParamsError, match=field):
        validate_params(kind, {"system": spec, **params})


def test_good_energy_positions_pass(spec: dict) -> None:
    p = validate_params("energy", {"system": spec, "positions": [[[0.1, 0.2, 0.3]] * 22]})
    assert len(p.positions) == 1
