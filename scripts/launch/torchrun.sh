#!/usr/bin/env bash
# Single node, one process per GPU, for any task entry point:
#   NPROC=8 scripts/launch/torchrun.sh image_sm.train configs/image_sm/videomamba_tiny_in1k_224.yaml \
#       --opts data.train_root=$IMAGENET/train data.val_root=$IMAGENET/val
# NPROC defaults to the number of visible GPUs (1 if none). PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: [NPROC=N] $0 MODULE CONFIG [entry-point args, e.g. --opts key=value ...]" >&2
  exit 2
fi
MODULE=$1; CONFIG=$2; shift 2
if [ -z "${NPROC:-}" ]; then
  NPROC=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${NPROC:-0}" -gt 0 ] || NPROC=1
fi
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
  -m "$MODULE" --config "$CONFIG" "$@"
