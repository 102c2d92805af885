"""What each task adds to the task-agnostic engine: its losses, its evaluation and its recipe pieces.

* :mod:`.classification`: image and video classification (top-k evaluation, mixup/cutmix losses, the
  self-distillation loss, the multi-view video test protocol, regression for LVU).
* :mod:`.masked`: masked video pretraining with a CLIP teacher (the teacher and the alignment loss of a config).
* :mod:`.video_text`: video-text pretraining and retrieval (the weighted model losses, the alternating loader of
  several media, zero-shot retrieval with ITM re-ranking and its metrics).

The engine (:mod:`videomamba.engine`) runs any of them; the entry points (``image_sm``, ``video_sm``,
``video_mm``) assemble a task's pieces from a config.
"""
