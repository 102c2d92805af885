#!/usr/bin/env bash
# video_sm on Slurm: video_sm/exp/slurm.sh [sbatch options] -- CONFIG [--opts key=value ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU.
# e.g. video_sm/exp/slurm.sh -N 2 --gres=gpu:8 --cpus-per-task=64 -p PARTITION -t 72:00:00 -- \
#          configs/video_sm/k400/videomamba_middle_f16_res224.yaml --opts data.data_path=$K400/annotations \
#          data.prefix=$K400/videos model.finetune=$VIDEOMAMBA_HOME/videomamba_m16_in1k_res224.pth
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
exec sbatch "${SBATCH_OPTS[@]}" "$ROOT/scripts/launch/slurm_$MODE.sbatch" video_sm.finetune "$@"
