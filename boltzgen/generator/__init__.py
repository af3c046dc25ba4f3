"""Boltzmann generators: configuration (``config``), model (``model``), training data
(``data``), its balancing over backbone states (``balance``) and training (``training``),
several flows as one proposal (``mixture``), flow-driven MD (``flow_md``), and the
end-to-end workflow steps every front end shares
(``workflow``). Names load on first use, so importing ``boltzgen.generator.config`` does not
pull in torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BalanceConfig": "boltzgen.generator.config",
    "FlowConfig": "boltzgen.generator.config",
    "TrainConfig": "boltzgen.generator.config",
    "TrainingData": "boltzgen.generator.data",
    "as_training_data": "boltzgen.generator.data",
    "state_weights": "boltzgen.generator.data",
    "BoltzmannGenerator": "boltzgen.generator.model",
    "FlowMixture": "boltzgen.generator.mixture",
    "sample_mixture": "boltzgen.generator.mixture",
    "backbone_state_labels": "boltzgen.generator.balance",
    "pattern_weights": "boltzgen.generator.balance",
    "fit": "boltzgen.generator.training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'boltzgen.generator' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
