"""FSDP2 support: a segment over one sharded parameter's local shard (SPEC §6).

``fully_shard`` gives each rank a shard of every parameter (a DTensor) and all-gathers the shards for
each forward. The shard's storage is what FSDP2 gathers from, so it is not relocated into a flat buffer:
each sharded parameter is its own segment, updated in place (the probe written into the shard is what
the probe forward sees after the all-gather). The reductions are sums over shards: the optimizer
all-reduces them with the losses (``distributed.all_reduce_step``).
"""
from __future__ import annotations

import torch

from .contract import Hyper

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = ()


def is_sharded(p) -> bool:
    return bool(DTensor) and isinstance(p, DTensor)


class ShardSegment:
    """The Segment interface (``flat.Segment``) over one DTensor parameter's local shard."""

    inplace = True

    def __init__(self, p, hyper: Hyper, label: str):
        local = p.to_local()
        if p.dtype != torch.float32 or not local.is_contiguous():
            raise NotImplementedError(
                f"sharded (FSDP2) parameters must be contiguous float32 ({label}, {p.dtype}); "
                "mixed precision with sharding is not supported yet")
        self.params, self.labels, self.hyper = [p], [label], hyper
        self.device, self.dtype = local.device, local.dtype
        self.master = self.work = local.view(-1)
        self.numel = self.master.numel()
        self.grad = torch.zeros_like(self.master)
        self.states = [torch.zeros_like(self.master) for _ in hyper.state_names()]

    def views(self, flat: torch.Tensor) -> list:
        return [flat.view_as(self.params[0].to_local())]

    def attach_grads(self) -> None:
        """FSDP2 hands over a new reduce-scattered local gradient every backward: use it directly."""
        g = self.params[0].grad
        if g is None:
            self.grad = torch.zeros_like(self.master)
        else:
            self.grad = g.to_local().reshape(-1)

    def zero_grad(self) -> None:
        self.params[0].grad = None

    def state_views(self) -> dict:
        return {name: self.views(buf) for name, buf in zip(self.hyper.state_names(), self.states)}

    def sync_master(self) -> None:
        pass
