#!/usr/bin/env bash
# The embedded video-text pipeline on the Moving Digits captions (no download, CPU, < 15 min on 2 cores):
#   0. the data (videos, images at the videos' scale, captions; generated once into $VIDEOMAMBA_DATA or
#      ~/.cache/videomamba/data),
#   1. the image model: the vision encoder's VideoMamba trained on the digit images at the videos' scale
#      (image_sm, configs/image_sm/moving_digits_video_scale.yaml; skipped when its checkpoint exists), which
#      starts the vision encoder as an ImageNet model starts the paper's video models; beside it the
#      CLIP-architecture teacher on the same images and its teacher file (skipped when present) and the
#      random-initialisation baseline,
#   1b. the video stage: the image model trained on the training videos to name each one's (digit, motion)
#      group, the content its captions describe (video_sm.finetune, configs/video_sm/moving_digits_groups.yaml,
#      80 classes with a head factored over each group's digit and motion, design decision D12; skipped when its
#      checkpoint exists), on both cores (one process per core),
#   2. video-text pretraining, masked stage (VTC + VTM + MLM + UTA with attention masks), from the video stage,
#   3. video-text pretraining, unmasked stage (all tokens, no teacher),
#   4. with --with-variant, after the rest: the masked-pretraining-free variant, the same two stages without
#      teacher, masks and UTA (also from the video stage); about 6 more minutes,
#   5. zero-shot retrieval on the test split: the pretrained model, a random initialisation (and the variant),
#      and a table of R@1/5/10, MdR in both directions (OUT/moving_digits_summary.json) with its bar chart.
# Steps 1 run as two lanes side by side, one thread each (OMP_NUM_THREADS=1): on 2 cores that is faster than
# one lane of two threads. Steps 1b-4 take both cores as one process per core (design decision D11). Finished
# steps are skipped on a rerun (each run resumes or finds itself done). PYTHON picks the interpreter
# (default: .venv/bin/python when it exists); OUTPUTS the output root (default: outputs).
set -euo pipefail
WITH_VARIANT=0
for arg in "$@"; do
  case $arg in
    --with-variant) WITH_VARIANT=1 ;;
    *) echo "usage: bash video_mm/exp/moving_digits.sh [--with-variant]" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUTPUTS=${OUTPUTS:-outputs}
IMAGE_DIR=$OUTPUTS/image_sm/moving_digits_video_scale
TEACHER_DIR=$OUTPUTS/image_sm/moving_digits_clip_teacher_video_scale
GROUPS_DIR=$OUTPUTS/video_sm/moving_digits_groups
OUT=$OUTPUTS/video_mm
ZS=configs/video_mm/moving_digits_zero_shot.yaml
start=$(date +%s)
stamp() { echo "   [$(( $(date +%s) - start )) s] $*"; }

echo "== 0/5 data: Moving Digits videos, images at the videos' scale and captions"
"$PY" -c "from videomamba.data.moving_digits import make_video_text_variant as m; print(m())"

lane() {   # lane NAME FUNCTION: runs FUNCTION with its output prefixed by [NAME]
  local name=$1; shift
  ( set -o pipefail; "$@" 2>&1 | sed -u "s/^/[$name] /" )
}
image_model() {
  if [ ! -f "$IMAGE_DIR/checkpoint-best.pth" ]; then
    stamp "== 1/5 the image model: image_sm.train on the digits at the videos' scale -> $IMAGE_DIR"
    "$PY" -m image_sm.train --config configs/image_sm/moving_digits_video_scale.yaml --no-progress \
      --opts output_dir="$IMAGE_DIR"
  else
    stamp "== 1/5 the image model: $IMAGE_DIR/checkpoint-best.pth exists"
  fi
}
teacher_and_chance() {
  if [ ! -f "$TEACHER_DIR/teacher.pth" ]; then
    stamp "== 1/5 teacher: image_sm.train (CLIP-architecture ViT on the same images) + videomamba convert-clip"
    "$PY" -m image_sm.train --config configs/image_sm/moving_digits_clip_teacher_video_scale.yaml --no-progress \
      --opts output_dir="$TEACHER_DIR"
    "$PY" -m videomamba.cli convert-clip "$TEACHER_DIR/checkpoint-best.pth" "$TEACHER_DIR/teacher.pth"
  else
    stamp "== 1/5 teacher: $TEACHER_DIR/teacher.pth exists"
  fi
  stamp "== 5/5 zero-shot retrieval of a random initialisation (the chance baseline)"
  "$PY" -m video_mm.retrieval --config "$ZS" --random-init --no-progress --opts output_dir="$OUT/moving_digits_zs_random"
}
both_cores() {   # one process per core (design decision D11)
  env -u OMP_NUM_THREADS VIDEOMAMBA_CPU_PROCESSES=${VIDEOMAMBA_CPU_PROCESSES:-2} "$@"
}
video_stage() {
  if [ ! -f "$GROUPS_DIR/checkpoint-best.pth" ]; then
    stamp "== 1b/5 the video stage: video_sm.finetune on the 80 (digit, motion) groups, both cores -> $GROUPS_DIR"
    both_cores "$PY" -m video_sm.finetune --config configs/video_sm/moving_digits_groups.yaml --no-progress \
      --opts model.finetune="$IMAGE_DIR/checkpoint-best.pth" output_dir="$GROUPS_DIR"
  else
    stamp "== 1b/5 the video stage: $GROUPS_DIR/checkpoint-best.pth exists"
  fi
}
pretrained() {
  stamp "== 2/5 video-text pretraining, masked stage (from the video stage, teacher $TEACHER_DIR), both cores"
  both_cores "$PY" -m video_mm.pretrain --config configs/video_mm/moving_digits_masked.yaml --no-progress \
    --opts teacher.path="$TEACHER_DIR/teacher.pth" model.vision.pretrained="$GROUPS_DIR/checkpoint-best.pth" \
           output_dir="$OUT/moving_digits_masked"
  stamp "== 3/5 video-text pretraining, unmasked stage, both cores"
  both_cores "$PY" -m video_mm.pretrain --config configs/video_mm/moving_digits_unmasked.yaml --no-progress \
    --opts model.pretrained="$OUT/moving_digits_masked/checkpoint-latest.pth" output_dir="$OUT/moving_digits_unmasked"
  stamp "== 5/5 zero-shot retrieval on the test split: masked + unmasked stages"
  OMP_NUM_THREADS=2 "$PY" -m video_mm.retrieval --config "$ZS" --zero-shot --no-progress \
    --checkpoint "$OUT/moving_digits_unmasked/checkpoint-latest.pth" --opts output_dir="$OUT/moving_digits_zs_pretrained"
}
variant() {
  stamp "== 4/5 the masked-pretraining-free variant, stage 1: no teacher, masks or UTA (from the video stage)"
  both_cores "$PY" -m video_mm.pretrain --config configs/video_mm/moving_digits_masked.yaml --no-progress \
    --opts teacher.path=null loss.uta=0 mask.video.type=none mask.image.type=none \
           model.vision.pretrained="$GROUPS_DIR/checkpoint-best.pth" output_dir="$OUT/moving_digits_no_masked_stage1"
  stamp "== 4/5 the masked-pretraining-free variant, stage 2 (the unmasked stage)"
  both_cores "$PY" -m video_mm.pretrain --config configs/video_mm/moving_digits_unmasked.yaml --no-progress \
    --opts model.pretrained="$OUT/moving_digits_no_masked_stage1/checkpoint-latest.pth" \
           output_dir="$OUT/moving_digits_no_masked"
  stamp "== 5/5 zero-shot retrieval on the test split: the variant"
  OMP_NUM_THREADS=2 "$PY" -m video_mm.retrieval --config "$ZS" --zero-shot --no-progress \
    --checkpoint "$OUT/moving_digits_no_masked/checkpoint-latest.pth" --opts output_dir="$OUT/moving_digits_zs_no_masked"
}

# lane a: the image model; lane b: the teacher and the chance baseline; then, on both cores, the video stage,
# the two pretraining stages and (--with-variant) the variant
lane image image_model & a=$!
lane teacher teacher_and_chance & b=$!
wait $a || { wait $b || true; echo "the image model failed"; exit 1; }
wait $b || { echo "the teacher or the random-initialisation baseline failed"; exit 1; }
lane video video_stage || { echo "the video stage failed"; exit 1; }
lane pretrained pretrained || { echo "a video-text stage failed (see above)"; exit 1; }
main_seconds=$(( $(date +%s) - start ))
if [ $WITH_VARIANT = 1 ]; then
  lane variant variant || { echo "the variant failed (see above)"; exit 1; }
fi

"$PY" - "$OUT" "$main_seconds" "$(( $(date +%s) - start ))" <<'PYEOF'
import json, sys
from pathlib import Path
out, seconds, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [("masked + unmasked stages", "moving_digits_zs_pretrained"),
        ("masked-pretraining-free (no teacher/masks/UTA)", "moving_digits_zs_no_masked"),
        ("random initialisation", "moving_digits_zs_random")]
# the variant's row only where it ran (--with-variant, now or in an earlier run of the same OUTPUTS)
rows = [(name, d) for name, d in rows if (out / d / "results.json").is_file()]
summary = {}
done = f"the pretrained model's retrieval in {seconds} s" + (f", everything in {total} s" if total != seconds else "")
print(f"pipeline done: {done}; zero-shot retrieval on the test split (ITM re-ranked; ITC in results.json):")
print(f"{'model':46s} {'T2V R@1/5/10':>18s} {'MdR':>5s}   {'V2T R@1/5/10':>18s} {'MdR':>5s}")
for name, d in rows:
    r = json.loads((out / d / "results.json").read_text())["digits_test"]["itm"]
    summary[name] = r
    print(f"{name:46s} {r['img_r1']:5.1f}/{r['img_r5']:5.1f}/{r['img_r10']:5.1f} {r['img_mdr']:5g}   "
          f"{r['txt_r1']:5.1f}/{r['txt_r5']:5.1f}/{r['txt_r10']:5.1f} {r['txt_mdr']:5g}")
(out / "moving_digits_summary.json").write_text(json.dumps({"seconds": int(seconds), **summary}, indent=1))
# the bar chart of the README: R@1/5/10 in both directions, each model beside the others
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
width = 0.8 / len(summary)
for ax, (side, title) in zip(axes, (("img", "text -> video"), ("txt", "video -> text"))):
    for j, (name, r) in enumerate(summary.items()):
        vals = [r[f"{side}_r{k}"] for k in (1, 5, 10)]
        bars = ax.bar([i + (j - (len(summary) - 1) / 2) * width for i in range(3)], vals, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(3), ["R@1", "R@5", "R@10"])
    ax.set_title(f"{title} (ITM re-ranked)")
    ax.set_ylim(0, 100)
axes[0].set_ylabel("% of queries")
axes[1].legend(fontsize=7, loc="upper left")
fig.suptitle("Moving Digits zero-shot retrieval, test split (271 videos, 542 captions)", fontsize=10)
fig.tight_layout()
fig.savefig(out / "moving_digits_retrieval.png", dpi=110)
print(f"table: {out / 'moving_digits_summary.json'}; chart: {out / 'moving_digits_retrieval.png'}")
PYEOF
