#!/usr/bin/env bash
# video_sm on Slurm: video_sm/exp/slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# e.g. video_sm/exp/slurm.sh -N 2 --gres=gpu:8 --cpus-per-task=64 -p PARTITION -t 72:00:00 -- \
#          configs/video_sm/k400/videomamba_middle_f16_res224.yaml --opts data.data_path=$K400/annotations \
#          data.prefix=$K400/videos model.finetune=$VIDEOMAMBA_HOME/videomamba_m16_in1k_res224.pth
# (MODE=srun also needs --ntasks-per-node equal to the GPUs per node.)
set -euo pipefail
exec "$(cd "$(dirname "$0")/../.." && pwd)/scripts/launch/slurm_submit.sh" video_sm.finetune "$@"
