"""image_sm end to end on the embedded data: one epoch, then a resumed second epoch, then --eval."""
import json

from image_sm.train import main

CONFIG = "configs/image_sm/moving_digits_tiny.yaml"


def test_train_resume_and_eval(tmp_path):
    base = ["--config", CONFIG, "--no-progress", "--opts", f"output_dir={tmp_path / 'run'}",
            f"data.root={tmp_path / 'data'}", "model.kwargs.depth=1", "model.kwargs.embed_dim=32"]
    first = main(base + ["train.epochs=1"])
    assert 0 <= first["val_acc1"] <= 100 and first["train_loss"] > 0
    run = tmp_path / "run"
    assert {"config.yaml", "log.txt", "checkpoint-latest.pth", "checkpoint-best.pth"} <= {p.name for p in run.iterdir()}
    second = main(base + ["train.epochs=2"])          # resumes at epoch 1 from checkpoint-latest.pth
    epochs = [json.loads(line)["epoch"] for line in (run / "log.txt").read_text().splitlines()]
    assert epochs == [0, 1]
    stats = main(["--config", CONFIG, "--no-progress", "--eval", "--opts", f"output_dir={run}",
                  f"data.root={tmp_path / 'data'}", "model.kwargs.depth=1", "model.kwargs.embed_dim=32"])
    best = max(json.loads(line)["val_acc1"] for line in (run / "log.txt").read_text().splitlines())
    assert abs(stats["acc1"] - best) < 1e-4 and abs(second["best_acc1"] - best) < 1e-4   # log.txt rounds to 1e-6
