"""Shared test configuration: which backends and devices exist here."""
import os

import pytest
import torch

from qlab_fused.backends import NAMES, why_not

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# On a 2-core machine shared with other work, torch's intra-op threads fight over the cores and make
# the many small tensors of this suite 5-10x slower (measured). Tests that need threads set them.
if (os.cpu_count() or 1) <= 2:
    torch.set_num_threads(1)


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


def record_rule_step_arg(monkeypatch, index: int, name: str) -> list:
    """Spy on the device rule: returns the list that each optimizer step appends the value of
    rules.rule_step's argument ``name`` (positional ``index``) to."""
    from qlab_fused import rules
    seen = []
    real = rules.rule_step

    def spy(*args, **kw):
        seen.append(args[index] if len(args) > index else kw.get(name))
        return real(*args, **kw)

    monkeypatch.setattr(rules, "rule_step", spy)
    return seen
