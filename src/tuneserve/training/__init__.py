"""Training: one seam, ``build(data, plan, out) -> Package``, that every stage which trains
a model goes through; strategies registered per backbone family; the loop (schedules,
precision, early stopping, resume) and the backbones' trainers."""

from . import distill  # noqa: F401 - registers the compress strategy distill
from ._build import Parts, Run, build, check_out, split_for
from ._plan import (
    Options,
    Plan,
    SplitPlan,
    Strategy,
    get_strategy,
    list_strategies,
    plan,
    register_strategy,
    resolve_backbone,
)
from ._result import TrainedModel
from .api import TrainResult, default_config, train
from .augment import ImageAugment
from .classic import train_logistic_regression, train_mlp, train_sklearn
from .cnn import CNNConfig, train_cnn
from .config import TrainConfig
from .feature_cache import FeatureCache
from .loop import LoopResult, fit, on_epoch, on_step
from .pretrain import PretrainResult, pretrain, pretrain_defaults
from .prune import PruneConfig, SparseConfig  # noqa: F401  (registers sparse and prune)
from .qat import QATConfig  # noqa: F401  (registers the compress strategy qat)
from .text import train_text
from .update import DEFAULT_PASSES, MLP_UPDATE, UPDATABLE, Updated, update
from .vision import train_vision

__all__ = [
    "DEFAULT_PASSES",
    "MLP_UPDATE",
    "UPDATABLE",
    "CNNConfig",
    "FeatureCache",
    "ImageAugment",
    "LoopResult",
    "Options",
    "Parts",
    "Plan",
    "PretrainResult",
    "Run",
    "SplitPlan",
    "Strategy",
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "Updated",
    "build",
    "check_out",
    "default_config",
    "fit",
    "get_strategy",
    "list_strategies",
    "on_epoch",
    "on_step",
    "plan",
    "pretrain",
    "pretrain_defaults",
    "register_strategy",
    "resolve_backbone",
    "split_for",
    "train",
    "train_cnn",
    "train_logistic_regression",
    "train_mlp",
    "train_sklearn",
    "train_text",
    "train_vision",
    "update",
]
