"""qlab_fused: QLABGrad optimizers for PyTorch; the learning rate is fitted every step.

    import qlab_fused as qf
    opt = qf.QLABAdam(model.parameters())
    loss = opt.step(closure)          # closure() returns the loss, without calling backward()
"""
from . import reference
from .backends import backends
from .optimizer import QLABAdam, QLABAdamW, QLABOptimizer, QLABSGD
from .reference import RULES

__all__ = ["QLABSGD", "QLABAdam", "QLABAdamW", "QLABOptimizer", "backends", "reference", "RULES"]
__version__ = "0.1.0"
