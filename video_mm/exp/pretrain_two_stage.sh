#!/usr/bin/env bash
# Both video-text pretraining stages on one node, the official order (docs/design.md §4):
#   [NPROC=N] [OUTPUT_ROOT=DIR] video_mm/exp/pretrain_two_stage.sh CORPUS [--no-progress] [--opts key=value ...]
#   CORPUS: 5m | 17m | 25m.
#   1. masked:   configs/video_mm/pretrain_CORPUS_masked.yaml   -> OUTPUT_ROOT/pretrain_CORPUS_masked
#   2. unmasked: configs/video_mm/pretrain_CORPUS_unmasked.yaml -> OUTPUT_ROOT/pretrain_CORPUS_unmasked, starting
#      from stage 1's checkpoint-latest.pth, without the teacher (teacher.path=null whatever the opts say).
# The same --opts go to both stages (data roots, model.text.path, teacher.path for stage 1); output_dir is set
# here (OUTPUT_ROOT, default outputs/video_mm, relative to the current directory). A rerun resumes each stage
# from its own checkpoint-latest.pth (a finished stage only reports that it is done).
# e.g. NPROC=8 video_mm/exp/pretrain_two_stage.sh 5m --opts data.anno_root=$ANNO data.media_root=$MEDIA \
#          model.text.path=/models/bert-base-uncased teacher.path=$VIDEOMAMBA_HOME/clip_visual_encoder/vit_b16.pth
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: [NPROC=N] [OUTPUT_ROOT=DIR] $0 CORPUS [--no-progress] [--opts key=value ...]  (CORPUS: 5m | 17m | 25m)" >&2
  exit 2
fi
CORPUS=$(echo "$1" | tr '[:upper:]' '[:lower:]'); shift
case "$CORPUS" in 5m|17m|25m) ;; *) echo "$0: CORPUS must be 5m, 17m or 25m, got '$CORPUS'" >&2; exit 2;; esac
EXTRA=(); OPTS=(); in_opts=0
for arg in "$@"; do
  if [ "$arg" = "--opts" ]; then in_opts=1; continue; fi
  if [ $in_opts -eq 1 ] && [[ $arg != --* ]]; then
    case "$arg" in
      output_dir=*|+output_dir=*) echo "$0: set OUTPUT_ROOT instead of output_dir (the two stages need two)" >&2; exit 2;;
    esac
    OPTS+=("$arg")
  else
    in_opts=0; EXTRA+=("$arg")
  fi
done
OUT=${OUTPUT_ROOT:-outputs/video_mm}
MASKED="$OUT/pretrain_${CORPUS}_masked"
UNMASKED="$OUT/pretrain_${CORPUS}_unmasked"

echo "== 1/2 masked stage: $MASKED"
"$ROOT/scripts/launch/torchrun.sh" video_mm.pretrain "$ROOT/configs/video_mm/pretrain_${CORPUS}_masked.yaml" \
  ${EXTRA[@]+"${EXTRA[@]}"} --opts ${OPTS[@]+"${OPTS[@]}"} output_dir="$MASKED"
if [ ! -f "$MASKED/checkpoint-latest.pth" ]; then
  echo "$0: $MASKED/checkpoint-latest.pth not found after the masked stage" >&2
  exit 1
fi
echo "== 2/2 unmasked stage: $UNMASKED (from $MASKED/checkpoint-latest.pth)"
"$ROOT/scripts/launch/torchrun.sh" video_mm.pretrain "$ROOT/configs/video_mm/pretrain_${CORPUS}_unmasked.yaml" \
  ${EXTRA[@]+"${EXTRA[@]}"} --opts ${OPTS[@]+"${OPTS[@]}"} output_dir="$UNMASKED" \
  model.pretrained="$MASKED/checkpoint-latest.pth" teacher.path=null
