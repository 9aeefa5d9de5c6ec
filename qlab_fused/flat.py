"""Flat buffers: the parameters of one (param group, device, dtype) laid out in one contiguous buffer.

After construction every ``p.data`` and ``p.grad`` is a view into its segment's buffers, so the fused
passes make one sweep over memory per segment instead of one launch per tensor (SPEC §3).

Buffers of a segment:
- ``work``: what the model reads (the parameters' own dtype). ``p.data`` views it.
- ``master``: fp32 θ. ``probe="inplace"`` (fp32 only): master *is* work. ``probe="copy"``: a separate
  fp32 buffer; this is also the fp32 master-weight path for bf16/fp16 models.
- ``grad``: the gradients (parameters' dtype). ``p.grad`` views it.
- ``states``: fp32 base-optimizer state (momentum buffer; or Adam's exp_avg, exp_avg_sq).
"""
from __future__ import annotations

import torch

from .contract import Hyper

# Each parameter starts on a 64-byte boundary (16 fp32 elements) so per-tensor views stay aligned for
# vectorised access; padding elements are zero and contribute nothing to any reduction.
_ALIGN = 16
LOW_PRECISION = (torch.bfloat16, torch.float16)
SUPPORTED = (torch.float32,) + LOW_PRECISION


class Segment:
    def __init__(self, params: list, hyper: Hyper, inplace: bool, labels: list | None = None):
        p0 = params[0]
        self.params = params
        self.labels = labels or [f"parameter {i}" for i in range(len(params))]
        self.hyper = hyper
        self.device, self.dtype = p0.device, p0.dtype
        self.inplace = inplace and self.dtype == torch.float32
        self.offsets, off = [], 0
        for p in params:
            self.offsets.append(off)
            off += (p.numel() + _ALIGN - 1) // _ALIGN * _ALIGN
        self.numel = off
        self.work = torch.zeros(off, dtype=self.dtype, device=self.device)
        self.grad = torch.zeros(off, dtype=self.dtype, device=self.device)
        for p, view in zip(params, self.views(self.work)):
            view.copy_(p.detach())
            p.data = view
        self.master = self.work if self.inplace else self.work.to(torch.float32, copy=True)
        self.states = [torch.zeros(off, dtype=torch.float32, device=self.device)
                       for _ in hyper.state_names()]
        self.attach_grads()

    def views(self, flat: torch.Tensor) -> list:
        return [flat[o:o + p.numel()].view_as(p) for p, o in zip(self.params, self.offsets)]

    def attach_grads(self) -> None:
        """Point every ``p.grad`` at its slot; fold in gradients that autograd or the user replaced.

        Host-side metadata checks only (no synchronisation): a gradient that is not our view is
        copied into the slot; a missing gradient (parameter unused in this loss) zeroes its slot.
        """
        for p, view, label in zip(self.params, self.views(self.grad), self.labels):
            g = p.grad
            if g is not None and g.layout != torch.strided:
                raise RuntimeError(f"QLAB does not support sparse gradients ({label}, shape "
                                   f"{tuple(p.shape)}); leave p.grad to the optimizer (it "
                                   "accumulates densely) or use nn.Embedding(sparse=False)")
            if g is not None and g.data_ptr() == view.data_ptr() and g.shape == view.shape:
                continue
            if g is None:
                view.zero_()
            else:
                view.copy_(g)
            p.grad = view

    def zero_grad(self) -> None:
        self.grad.zero_()
        self.attach_grads()

    def state_views(self) -> dict:
        """name -> list of per-parameter views of each state buffer (what state_dict() exposes)."""
        out = {name: self.views(buf) for name, buf in zip(self.hyper.state_names(), self.states)}
        if not self.inplace and self.dtype != torch.float32:
            out["master"] = self.views(self.master)
        return out

    def sync_master(self) -> None:
        """Copy the model's parameters into the fp32 master (after editing ``p.data`` in copy mode)."""
        if not self.inplace:
            self.master.copy_(self.work)
