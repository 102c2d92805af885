#!/usr/bin/env bash
# video_sm on one node: NPROC=8 video_sm/exp/train.sh CONFIG [--opts key=value ...] [--eval [--checkpoint P]]
# e.g. NPROC=8 video_sm/exp/train.sh configs/video_sm/k400/videomamba_tiny_f8_res224.yaml \
#          --opts data.data_path=$K400/annotations data.prefix=$K400/videos \
#                 model.finetune=$VIDEOMAMBA_HOME/videomamba_t16_in1k_res224.pth
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
exec "$ROOT/scripts/launch/torchrun.sh" video_sm.finetune "$@"
