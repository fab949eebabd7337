"""Training: the loop (schedules, precision, early stopping, resume), the CNN, classic models."""

from ._result import TrainedModel
from .augment import ImageAugment
from .classic import train_logistic_regression
from .cnn import CNNConfig, train_cnn
from .config import TrainConfig
from .loop import LoopResult, fit

__all__ = [
    "CNNConfig",
    "ImageAugment",
    "LoopResult",
    "TrainConfig",
    "TrainedModel",
    "fit",
    "train_cnn",
    "train_logistic_regression",
]
