import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def images():
    """64 random 1x8x8 images in [0, 1)."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(64, 1, 8, 8, generator=generator)
