#!/usr/bin/env bash
# Masked pretraining on Slurm: video_sm/exp/pretrain_slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# The official K400 recipe ran on 32 GPUs (4 nodes x 8) with batch 64 each:
#   video_sm/exp/pretrain_slurm.sh -N 4 --gres=gpu:8 --cpus-per-task=64 -p PARTITION -t 14-00:00:00 -- \
#       configs/video_sm/k400/videomamba_middle_mask_pt_f8_res224.yaml --opts data.train_file=$K400/train.txt \
#       data.prefix=$K400/videos teacher.path=$VIDEOMAMBA_HOME/clip_visual_encoder/vit_b16.pth
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/launch/slurm_submit.sh" video_sm.pretrain "$@"
