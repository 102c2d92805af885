#!/usr/bin/env bash
# image_sm on Slurm: image_sm/exp/slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# e.g. image_sm/exp/slurm.sh -N 2 --gres=gpu:8 -p PARTITION -t 72:00:00 -- \
#          configs/image_sm/videomamba_middle_in1k_224_distill.yaml --opts data.train_root=$IMAGENET/train data.val_root=$IMAGENET/val
# (MODE=srun also needs --ntasks-per-node equal to the GPUs per node.)
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/launch/slurm_submit.sh" image_sm.train "$@"
