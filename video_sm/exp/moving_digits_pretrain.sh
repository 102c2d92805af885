#!/usr/bin/env bash
# The embedded masked-pretraining pipeline on the Moving Digits data (no download, CPU):
#   1. the image task trains a small CLIP-architecture ViT teacher on the digit images,
#   2. `videomamba convert-clip` writes it as a CLIP visual-tower file,
#   3. video_sm.pretrain aligns the video student's visible tokens with the teacher (attention masks),
#   4. video_sm.finetune fine-tunes from the student with the video main job's recipe and tests it.
# Usage: bash video_sm/exp/moving_digits_pretrain.sh [MASK]      (MASK: attention (default), random, tube, ...)
# Finished steps are skipped on a rerun (each run resumes or finds itself done). PYTHON picks the
# interpreter (default: .venv/bin/python when it exists).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
MASK=${1:-attention}
TEACHER_DIR=outputs/image_sm/moving_digits_clip_teacher
PRETRAIN_DIR=outputs/video_sm/moving_digits_pretrain_$MASK
FINETUNE_DIR=outputs/video_sm/moving_digits_from_pretrain_$MASK
start=$(date +%s)

echo "== 1/4 teacher: image_sm.train (CLIP-architecture ViT on the digit images)"
"$PY" -m image_sm.train --config configs/image_sm/moving_digits_clip_teacher.yaml
echo "== 2/4 teacher file: videomamba convert-clip"
"$PY" -m videomamba.cli convert-clip "$TEACHER_DIR/checkpoint-best.pth" "$TEACHER_DIR/teacher.pth"
echo "== 3/4 masked pretraining: video_sm.pretrain (mask: $MASK)"
"$PY" -m video_sm.pretrain --config configs/video_sm/moving_digits_pretrain.yaml \
  --opts output_dir="$PRETRAIN_DIR" mask.type="$MASK" teacher.path="$TEACHER_DIR/teacher.pth"
echo "== 4/4 fine-tuning from the student: video_sm.finetune (the main job's recipe)"
"$PY" -m video_sm.finetune --config configs/video_sm/moving_digits.yaml \
  --opts output_dir="$FINETUNE_DIR" model.finetune="$PRETRAIN_DIR/checkpoint-best.pth"

"$PY" - "$FINETUNE_DIR/results.json" outputs/video_sm/moving_digits/results.json "$(( $(date +%s) - start ))" <<'PYEOF'
import json, sys
from pathlib import Path
ours, scratch, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
r = json.loads(ours.read_text())
print(f"pipeline done in {seconds} s: fine-tuned from masked pretraining: test top-1 {r['acc1']:.2f}% ({ours})")
if scratch.is_file():
    print(f"  the main job without pretraining (same recipe and test split): {json.loads(scratch.read_text())['acc1']:.2f}%"
          f" ({scratch})")
else:
    print("  run the main job for the comparison without pretraining: "
          "python -m video_sm.finetune --config configs/video_sm/moving_digits.yaml")
PYEOF
