"""Probe hygiene (SPEC §5): the probe forward must evaluate the same function as the training forward.

- RNG: the generators' states before the training forward are recorded and replayed for the probe, so
  dropout draws the same mask; afterwards the streams continue from where the training forward left
  them, as if no probe had run.
- Running statistics (BatchNorm and every other ``_NormBase``): snapshotted before each such module's
  probe forward and put back after it, so only the training forward updates them.
- Autocast: the probe runs under the autocast state recorded with the RNG. The probe also records the
  low-precision dtypes autocast ran modules with parameters in (the rule's probe floor counts them:
  an fp32 parameter read in bf16 rounds like a bf16 one).
- FSDP2: modules that ran in the probe are resharded afterwards. The root keeps its parameters
  gathered after a forward (a backward normally follows and reshards); after the probe the update
  pass writes the shards, and a gathered copy left behind would make the next forward read the probe.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

_AUTOCAST_DEVICES = ("cpu", "cuda")


@dataclass
class ForwardState:
    """What the training forward saw: RNG states and autocast settings."""

    cpu_rng: torch.Tensor
    cuda_rng: list = field(default_factory=list)
    autocast: dict = field(default_factory=dict)


def _cuda_live() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture() -> ForwardState:
    """Record the state a training forward is about to run under (host-side reads only)."""
    autocast = {}
    for dev in _AUTOCAST_DEVICES:
        if dev == "cuda" and not torch.cuda.is_available():
            continue
        autocast[dev] = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
    cuda_rng = torch.cuda.get_rng_state_all() if _cuda_live() else []
    return ForwardState(torch.get_rng_state(), cuda_rng, autocast)


def _set_rng(cpu_state, cuda_states) -> None:
    torch.set_rng_state(cpu_state)
    if cuda_states:
        torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def _frozen_running_stats():
    saved = {}

    def pre(module, args):
        if isinstance(module, _NormBase) and module.training and module.track_running_stats:
            saved[module] = [b.clone() for b in module.buffers(recurse=False) if b is not None]

    def post(module, args, out):
        bufs = saved.pop(module, None)
        if bufs is not None:
            for b, old in zip([b for b in module.buffers(recurse=False) if b is not None], bufs):
                b.copy_(old)

    h1, h2 = register_module_forward_pre_hook(pre), register_module_forward_hook(post)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()


@contextlib.contextmanager
def _reshard_fsdp_after():
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without distributed
        yield
        return
    seen = []

    def post(module, args, out):
        if isinstance(module, FSDPModule):
            seen.append(module)

    handle = register_module_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()
        for module in seen:
            module.reshard()


@dataclass
class ProbeRecord:
    """What the probe forward ran under: the dtypes autocast computed modules with parameters in."""

    autocast_dtypes: set = field(default_factory=set)


@contextlib.contextmanager
def _watch_autocast(record: ProbeRecord):
    # A pre-hook runs inside whatever autocast region the caller's forward entered, also one entered
    # in the closure or in a parent module's forward (the optimizer cannot see those from outside).
    # Functional code without modules is not seen.
    def pre(module, args):
        for dev in _AUTOCAST_DEVICES:  # mostly off: two C calls per module
            if torch.is_autocast_enabled(dev):
                dtype = torch.get_autocast_dtype(dev)
                if dtype not in record.autocast_dtypes and any(
                        p.device.type == dev for p in module.parameters(recurse=False)):
                    record.autocast_dtypes.add(dtype)

    handle = register_module_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def probe_context(before: ForwardState | None):
    """Run the probe forward as the training forward ran: same RNG draws, same autocast, running
    statistics untouched, no autograd. ``before=None``: no RNG replay (nothing was recorded).
    Yields a ProbeRecord, filled once the block has run."""
    after = capture()
    record = ProbeRecord()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_frozen_running_stats())
        stack.enter_context(_reshard_fsdp_after())
        stack.enter_context(_watch_autocast(record))
        if before is not None:
            _set_rng(before.cpu_rng, before.cuda_rng)
            for dev, (enabled, dtype) in before.autocast.items():
                stack.enter_context(torch.autocast(dev, dtype=dtype, enabled=enabled))
        try:
            yield record
        finally:
            _set_rng(after.cpu_rng, after.cuda_rng)
