"""Video-text pretraining and retrieval: the weighted model losses, the loader that alternates media types, the
model a config describes, zero-shot retrieval with ITM re-ranking and its metrics (R@k, MdR, MnR)."""
from .alternating_loader import AlternatingLoader
from .evaluate import evaluate_sets
from .loss import VideoTextLoss
from .metrics import query_ranks, retrieval_metrics
from .retrieval import evaluate_retrieval, summary_line

__all__ = ["AlternatingLoader", "VideoTextLoss", "evaluate_sets", "evaluate_retrieval", "summary_line",
           "retrieval_metrics", "query_ranks"]
