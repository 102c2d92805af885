#!/usr/bin/env bash
# Video-text pretraining on Slurm: video_mm/exp/pretrain_slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# The official runs: 5M on 2 nodes x 8 GPUs, 17M and 25M on 4 x 8, batch 128 (masked) / 64 (unmasked) per GPU:
#   video_mm/exp/pretrain_slurm.sh -N 4 --gres=gpu:8 --cpus-per-task=128 -p PARTITION -t 14-00:00:00 -- \
#       configs/video_mm/pretrain_25m_masked.yaml --opts data.anno_root=$ANNO data.media_root=$MEDIA \
#       model.text.path=/models/bert-base-uncased teacher.path=$VIDEOMAMBA_HOME/clip_visual_encoder/vit_b16.pth
#   then, once it is done, the same with configs/video_mm/pretrain_25m_unmasked.yaml (without teacher.path).
# (MODE=srun also needs --ntasks-per-node equal to the GPUs per node.)
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/launch/slurm_submit.sh" video_mm.pretrain "$@"
