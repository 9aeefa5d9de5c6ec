"""Small deterministic objectives shared by the optimizer tests."""
import torch


class Quartic:
    """L(θ) = Σ ½h(θ−t)² + ¼q(θ−t)⁴ over several tensors: smooth, convex, not quadratic, and well
    conditioned for the rule's Lβ − L0 + βd (so fp32 and float64 runs stay within 1e-5)."""

    def __init__(self, shapes, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.shapes = shapes
        self.h = [torch.rand(s, generator=g, dtype=torch.float64) * 9.9 + 0.1 for s in shapes]
        self.q = [torch.rand(s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]
        self.t = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        self.init = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]

    def loss(self, params):
        total = 0.0
        for p, h, q, t in zip(params, self.h, self.q, self.t):
            h, q, t = h.to(p.device), q.to(p.device), t.to(p.device)  # CUDA parameters too
            e = p.double() - t
            total = total + (0.5 * h * e * e + 0.25 * q * e ** 4).sum()
        return total

    def grads(self, params):
        return [(h * (p - t) + q * (p - t) ** 3) for p, h, q, t in zip(params, self.h, self.q, self.t)]

    def torch_params(self, dtype=torch.float32):
        return [torch.nn.Parameter(x.to(dtype).clone()) for x in self.init]
