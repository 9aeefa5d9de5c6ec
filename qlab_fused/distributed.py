"""Data-parallel semantics (SPEC §6), through torch.distributed.

Under DDP every rank sees its own part of the batch: the gradients are already averaged by DDP, and the
two losses are averaged here with one all-reduce after the probe, so every rank fits the same parabola,
takes the same α and keeps identical parameters. N ranks on B/N samples each then follow 1 process on B.
Under FSDP2 each rank also holds only a shard of θ, G and the state: the reductions (⟨V,G⟩, …) are
partial sums, added up across ranks in the same all-reduce as the losses.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def resolve(process_group):
    """The group to average over, or None when not running distributed (or with one rank).
    ``process_group``: None (the default group, if torch.distributed is initialised), False (never),
    or a process group."""
    if process_group is False or not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.group.WORLD if process_group in (None, True) else process_group
    return group if dist.get_world_size(group) > 1 else None


def average_losses(L0: torch.Tensor, Lb: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    both = torch.stack([L0.float().reshape(()), Lb.detach().float().reshape(()).to(L0.device)])
    dist.all_reduce(both, op=dist.ReduceOp.SUM, group=group)
    both = both / dist.get_world_size(group)
    return both[0], both[1]


def all_reduce_step(L0, Lb, red, group):
    """FSDP2: one all-reduce of [L0, Lβ, reductions]: losses averaged, reductions summed (float64)."""
    dev = L0.device
    vec = torch.cat([torch.stack([L0.reshape(()), Lb.detach().reshape(()).to(dev)]).double(),
                     red.to(device=dev, dtype=torch.float64)])
    dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
    world = dist.get_world_size(group)
    return vec[0] / world, vec[1] / world, vec[2:]
