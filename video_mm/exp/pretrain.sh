#!/usr/bin/env bash
# Video-text pretraining on one node: video_mm/exp/pretrain.sh CONFIG [NPROC] [--opts key=value ...]
#   NPROC (the second argument, or the NPROC variable) defaults to the visible GPUs (1 if none).
# e.g. video_mm/exp/pretrain.sh configs/video_mm/pretrain_5m_masked.yaml 8 \
#          --opts data.anno_root=$ANNO data.media_root=$MEDIA model.text.path=/models/bert-base-uncased \
#                 teacher.path=$VIDEOMAMBA_HOME/clip_visual_encoder/vit_b16.pth
# (the official runs used 2 nodes x 8 GPUs for 5M, 4 x 8 for 17M/25M: see pretrain_slurm.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG [NPROC] [--opts key=value ...]" >&2
  exit 2
fi
CONFIG=$1; shift
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  export NPROC=$1; shift
fi
exec "$ROOT/scripts/launch/torchrun.sh" video_mm.pretrain "$CONFIG" "$@"
