"""Run logging: tensorboard scalars, one JSON line per epoch (``log.txt``) and a one-line summary,
written by the main rank only."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..utils.dist import is_main


class RunLogger:
    def __init__(self, out_dir: str | Path, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.main = is_main()
        self.tb = None
        self.start = time.time()
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))
                except ImportError:  # tensorboard is a dependency, but keep logging working without it
                    self.tb = None

    def scalars(self, values: dict[str, float], step: int, prefix: str = ""):
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}{k}", v, step)

    def epoch(self, epoch: int, stats: dict[str, float]):
        """Append a JSON line to log.txt, add the scalars per epoch and print a one-line summary."""
        if not self.main:
            return
        record = {"epoch": epoch, **{k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()},
                  "elapsed_s": round(time.time() - self.start, 1)}
        with open(self.out_dir / "log.txt", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.scalars({k: v for k, v in stats.items() if isinstance(v, (int, float))}, epoch, prefix="epoch/")
        print(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in stats.items()), flush=True)

    def close(self):
        if self.tb is not None:
            self.tb.close()
