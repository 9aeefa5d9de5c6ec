"""Shared test configuration: which backends and devices exist here."""
import os

import pytest
import torch

from qlab_fused.backends import NAMES, why_not

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def available_backends():
    """(backend, device) pairs that can run here. Triton runs on CPU only through its interpreter."""
    out = []
    for dev in DEVICES:
        for name in NAMES:
            if name == "triton" and dev == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
                continue
            if why_not(name, torch.device(dev)) is None:
                out.append((name, dev))
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
