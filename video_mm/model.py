"""The video-text model a config describes: moved to :mod:`videomamba.tasks.video_text.recipe` (shared by
``video_mm.pretrain``, ``video_mm.retrieval`` and the tools); these names stay importable from here."""
from videomamba.tasks.video_text.recipe import active_losses, build, build_teacher, token_ids

__all__ = ["active_losses", "build", "build_teacher", "token_ids"]
