import os
from pathlib import Path

import pytest
import torch

# Without a GPU, run the Triton kernels in Triton's interpreter on CPU tensors (tiny shapes only).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_official(name: str) -> dict:
    """Official-output fixture (see tests/data/official/README.md)."""
    return torch.load(OFFICIAL / f"{name}.pt", weights_only=False)
