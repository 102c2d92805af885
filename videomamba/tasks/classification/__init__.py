"""Image and video classification: top-k evaluation, losses (mixup/cutmix, label smoothing, self-distillation,
regression) and the multi-view test protocol."""
from .distill import SelfDistillationLoss, token_cosine_loss
from .evaluate import evaluate
from .losses import (ClassificationLoss, MixedBatchLoss, VideoMixup, build_criterion, build_loss, default_loss_fn,
                     regression_loss, with_mixup)
from .multiview import confusion_matrix, evaluate_multiview, merge_views, predict_views

__all__ = ["evaluate", "build_criterion", "build_loss", "ClassificationLoss", "MixedBatchLoss", "VideoMixup",
           "with_mixup", "default_loss_fn", "regression_loss", "SelfDistillationLoss", "token_cosine_loss",
           "evaluate_multiview", "predict_views", "merge_views", "confusion_matrix"]
