#!/usr/bin/env bash
# image_sm on one node: NPROC=8 image_sm/exp/train.sh CONFIG [--opts key=value ...] [--eval]
# e.g. NPROC=8 image_sm/exp/train.sh configs/image_sm/videomamba_tiny_in1k_224.yaml \
#          --opts data.train_root=$IMAGENET/train data.val_root=$IMAGENET/val
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
exec "$ROOT/scripts/launch/torchrun.sh" image_sm.train "$@"
