#!/usr/bin/env bash
# image_sm on Slurm: image_sm/exp/slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# e.g. image_sm/exp/slurm.sh -N 2 --gres=gpu:8 -p PARTITION -t 72:00:00 -- \
#          configs/image_sm/videomamba_middle_in1k_224_distill.yaml --opts data.train_root=$IMAGENET/train data.val_root=$IMAGENET/val
# (MODE=srun also needs --ntasks-per-node equal to the GPUs per node.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SBATCH_OPTS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do SBATCH_OPTS+=("$1"); shift; done
if [ $# -lt 2 ]; then
  echo "usage: $0 [sbatch options] -- CONFIG [--opts key=value ...]" >&2
  exit 2
fi
shift   # the --
MODE=${MODE:-torchrun}
case "$MODE" in torchrun|srun) ;; *) echo "MODE must be torchrun or srun, got '$MODE'" >&2; exit 2;; esac
cd "$ROOT"
exec sbatch "${SBATCH_OPTS[@]}" "$ROOT/scripts/launch/slurm_$MODE.sbatch" image_sm.train "$@"
