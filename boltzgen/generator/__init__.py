"""Boltzmann generators: model, training, flow-driven MD."""

from boltzgen.generator.data import TrainingData, as_training_data, state_weights
from boltzgen.generator.model import BoltzmannGenerator
from boltzgen.generator.training import TrainConfig, fit

__all__ = [
    "BoltzmannGenerator",
    "TrainConfig",
    "TrainingData",
    "as_training_data",
    "fit",
    "state_weights",
]
