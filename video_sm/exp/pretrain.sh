#!/usr/bin/env bash
# Masked pretraining on one node: NPROC=8 video_sm/exp/pretrain.sh CONFIG [--opts key=value ...]
# e.g. NPROC=8 video_sm/exp/pretrain.sh configs/video_sm/k400/videomamba_middle_mask_pt_f8_res224.yaml \
#          --opts data.train_file=$K400/pretrain_train.txt data.prefix=$K400/videos \
#                 teacher.path=$VIDEOMAMBA_HOME/clip_visual_encoder/vit_b16.pth
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
exec "$ROOT/scripts/launch/torchrun.sh" video_sm.pretrain "$@"
