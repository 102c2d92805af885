#!/usr/bin/env bash
# Submit a task entry point to Slurm: scripts/launch/slurm_submit.sh MODULE [sbatch options] -- CONFIG [--opts ...]
#   MODE=torchrun (default): one torchrun per node;  MODE=srun: one srun task per GPU
#   (MODE=srun also needs --ntasks-per-node equal to the GPUs per node). Used by <task>/exp/slurm.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODULE=$1; shift
SBATCH_OPTS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do SBATCH_OPTS+=("$1"); shift; done
if [ $# -lt 2 ]; then
  echo "usage: $0 $MODULE [sbatch options] -- CONFIG [--opts key=value ...]" >&2
  exit 2
fi
shift   # the --
MODE=${MODE:-torchrun}
case "$MODE" in torchrun|srun) ;; *) echo "MODE must be torchrun or srun, got '$MODE'" >&2; exit 2;; esac
cd "$ROOT"
exec sbatch "${SBATCH_OPTS[@]}" "$ROOT/scripts/launch/slurm_$MODE.sbatch" "$MODULE" "$@"
