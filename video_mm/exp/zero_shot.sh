#!/usr/bin/env bash
# Zero-shot retrieval of a video-text checkpoint on one node, any number of GPUs:
#   [NPROC=N] video_mm/exp/zero_shot.sh DATASET CHECKPOINT [--opts key=value ...]
#   DATASET: msrvtt | didemo | anet | lsmdc | msvd (configs/video_mm/zero_shot/DATASET.yaml);
#   NPROC defaults to the visible GPUs (1 if none). Results: results.json in the config's output_dir.
# e.g. video_mm/exp/zero_shot.sh msrvtt $VIDEOMAMBA_HOME/videomamba_m16_25M_f8_res224.pth \
#          --opts data.anno_root=$ANNO data.media_root=$MEDIA model.text.path=/models/bert-base-uncased \
#                 output_dir=outputs/video_mm/zero_shot/msrvtt_25m
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -lt 2 ]; then
  echo "usage: [NPROC=N] $0 DATASET CHECKPOINT [--opts key=value ...]" >&2
  exit 2
fi
DATASET=$1; CHECKPOINT=$2; shift 2
CONFIG="$ROOT/configs/video_mm/zero_shot/$DATASET.yaml"
if [ ! -f "$CONFIG" ]; then
  echo "$0: unknown data set '$DATASET' (no $CONFIG; one of: msrvtt didemo anet lsmdc msvd)" >&2
  exit 2
fi
exec "$ROOT/scripts/launch/torchrun.sh" video_mm.retrieval "$CONFIG" --zero-shot --checkpoint "$CHECKPOINT" "$@"
