from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_official(name: str) -> dict:
    """Official-output fixture (see tests/data/official/README.md)."""
    return torch.load(OFFICIAL / f"{name}.pt", weights_only=False)
