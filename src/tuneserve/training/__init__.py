"""Training: the loop (schedules, precision, early stopping, resume), backbones' trainers."""

from ._result import TrainedModel
from .api import TrainResult, default_config, train
from .augment import ImageAugment
from .classic import train_logistic_regression, train_mlp, train_sklearn
from .cnn import CNNConfig, train_cnn
from .config import TrainConfig
from .feature_cache import FeatureCache
from .loop import LoopResult, fit
from .pretrain import PretrainResult, pretrain, pretrain_defaults
from .text import train_text
from .update import update
from .vision import train_vision

__all__ = [
    "CNNConfig",
    "FeatureCache",
    "ImageAugment",
    "LoopResult",
    "PretrainResult",
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "default_config",
    "fit",
    "pretrain",
    "pretrain_defaults",
    "train",
    "train_cnn",
    "train_logistic_regression",
    "train_mlp",
    "train_sklearn",
    "train_text",
    "train_vision",
    "update",
]
