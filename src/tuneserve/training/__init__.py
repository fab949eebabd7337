"""Training: the minimal CNN loop and classic estimators (strategies come next)."""

from ._result import TrainedModel
from .classic import train_logistic_regression
from .cnn import CNNConfig, train_cnn

__all__ = ["CNNConfig", "TrainedModel", "train_cnn", "train_logistic_regression"]
