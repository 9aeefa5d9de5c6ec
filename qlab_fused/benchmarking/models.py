"""Whole training-step profiles: an MLP, a small CNN and a char-level GPT (random data; only time
and memory are measured), each with torch's SGD/Adam and with QLAB-SGD/QLAB-Adam (inplace and copy
probe). The QLAB step is split into training forward F, backward B, probe forward, the two fused
passes, and the rest (rule, scalars, zero_grad); its ratio to the torch step is reported beside the
floor 1 + F/(F+B) (one extra forward, free optimizer).
"""
from __future__ import annotations

import gc
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .micro import median, sync

MODELS = ("mlp", "cnn", "gpt")


class _Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d),
                                 nn.Dropout(dropout))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    """A minimal GPT over characters (vocab 65, like tiny-shakespeare)."""

    def __init__(self, vocab=65, ctx=64, d=192, layers=4, heads=6, dropout=0.1):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*[_Block(d, heads, dropout) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def make(name: str, device, seed: int = 0, scale: str = "full"):
    """(model, inputs, targets, loss_fn): a fixed random batch of a realistic shape. ``scale="tiny"``
    shrinks widths and batches (for smoke tests: the code path, not the numbers)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tiny = scale == "tiny"
    if name == "mlp":  # 784-1024-1024-10, 1.9M parameters, batch 128
        h, bs = (64, 16) if tiny else (1024, 128)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, h), nn.ReLU(), nn.Linear(h, h),
                              nn.ReLU(), nn.Linear(h, 10))
        x, y = torch.randn(bs, 1, 28, 28, generator=g), torch.randint(0, 10, (bs,), generator=g)
        loss_fn = F.cross_entropy
    elif name == "cnn":  # 3 conv+BN blocks and a 2-layer head on 32×32×3, 1.2M parameters, batch 64
        def blk(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                    nn.MaxPool2d(2)]
        c, bs = (8, 4) if tiny else (32, 64)
        model = nn.Sequential(*blk(3, c), *blk(c, 2 * c), *blk(2 * c, 4 * c), nn.Flatten(),
                              nn.Linear(4 * c * 16, 16 * c), nn.ReLU(), nn.Dropout(0.1),
                              nn.Linear(16 * c, 10))
        x, y = torch.randn(bs, 3, 32, 32, generator=g), torch.randint(0, 10, (bs,), generator=g)
        loss_fn = F.cross_entropy
    elif name == "gpt":  # 4 layers, d 192, context 64, 1.8M parameters, batch 16×64 tokens
        model = CharGPT(ctx=16, d=32, layers=1, heads=2) if tiny else CharGPT()
        bs, t = (2, 16) if tiny else (16, 64)
        x = torch.randint(0, 65, (bs, t), generator=g)
        y = torch.randint(0, 65, (bs, t), generator=g)

        def loss_fn(out, tgt):
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), tgt.reshape(-1))
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return model.to(device), x.to(device), y.to(device), loss_fn


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tensor_bytes(model, opt) -> int:
    """Bytes of the distinct storages held by parameters, gradients and optimizer state (QLAB:
    its flat work/master/grad/state buffers), i.e. the memory the optimizer choice changes."""
    ts = [t for p in model.parameters() for t in (p, p.grad) if t is not None]
    for st in opt.state.values():
        ts += [v for v in st.values() if torch.is_tensor(v)]
    for seg in getattr(opt, "_segments", []):
        ts += [seg.work, seg.master, seg.grad, *seg.states]
    seen = {}
    for t in ts:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


class _TimedBackend:
    """Stands in for a segment's backend module and accumulates the time of each pass."""

    def __init__(self, be, acc, device):
        self.be, self.acc, self.device = be, acc, device

    def _timed(self, key, fn, *a):
        sync(self.device)
        t0 = time.perf_counter()
        out = fn(*a)
        sync(self.device)
        self.acc[key] = self.acc.get(key, 0.0) + time.perf_counter() - t0
        return out

    def probe_pass(self, *a):
        return self._timed("probe_pass", self.be.probe_pass, *a)

    def update_pass(self, *a):
        return self._timed("update_pass", self.be.update_pass, *a)


def make_opt(base: str, mode: str, params, backend: str = "auto"):
    """mode "torch" (torch's fused optimizer where it exists, else foreach) or "qlab-inplace" /
    "qlab-copy"; base "sgd" or "adam"."""
    params = list(params)
    if mode == "torch":
        cls = torch.optim.Adam if base == "adam" else torch.optim.SGD
        lr = 1e-3 if base == "adam" else 1e-2
        try:
            opt = cls(params, lr=lr, fused=True)
            opt._bench_impl = "fused"
        except (RuntimeError, ValueError):
            opt = cls(params, lr=lr, foreach=True)
            opt._bench_impl = "foreach"
        return opt
    import qlab_fused as qf

    probe = mode.split("-", 1)[1]
    cls = qf.QLABAdam if base == "adam" else qf.QLABSGD
    opt = cls(params, alpha0=1e-3 if base == "adam" else 1e-2, probe=probe, backend=backend)
    opt._bench_impl = "+".join(sorted(set(opt.backends_in_use)))
    return opt


class _Run:
    """One model copy with one optimizer; ``step()`` runs and times one training step."""

    def __init__(self, model_name, base, mode, device, backend, scale="full"):
        self.device, self.mode, self.qlab = device, mode, mode != "torch"
        self.model, self.x, self.y, self.loss_fn = make(model_name, device, scale=scale)
        self.opt = make_opt(base, mode, self.model.parameters(), backend)
        self.acc: dict = {}
        if self.qlab:
            for seg in self.opt._segments:
                seg.backend = _TimedBackend(seg.backend, self.acc, device)
        self.rows: list = []

    def closure(self):
        if torch.is_grad_enabled():
            return self.loss_fn(self.model(self.x), self.y)
        sync(self.device)
        t0 = time.perf_counter()
        out = self.loss_fn(self.model(self.x), self.y)
        sync(self.device)
        self.acc["probe_forward"] = self.acc.get("probe_forward", 0.0) + time.perf_counter() - t0
        return out

    def step(self, record: bool) -> None:
        dev, acc = self.device, self.acc
        acc.clear()
        sync(dev)
        t0 = time.perf_counter()
        self.opt.zero_grad()
        sync(dev)
        tz = time.perf_counter()
        loss = self.closure()
        sync(dev)
        t1 = time.perf_counter()
        loss.backward()
        sync(dev)
        t2 = time.perf_counter()
        if self.qlab:
            self.opt.step(self.closure, loss=loss)
        else:
            self.opt.step()
        sync(dev)
        t3 = time.perf_counter()
        if not record:
            return
        row = {"zero_grad": tz - t0, "forward": t1 - tz, "backward": t2 - t1, "total": t3 - t0,
               "probe_forward": acc.get("probe_forward", 0.0),
               "passes": acc.get("probe_pass", 0.0) + acc.get("update_pass", 0.0)}
        row["optimizer_other"] = t3 - t2 - row["probe_forward"] - row["passes"]
        if not self.qlab:
            row["passes"], row["optimizer_other"] = t3 - t2, 0.0
        self.rows.append(row)


def profile(model_name: str, base: str, modes=("torch", "qlab-inplace", "qlab-copy"), device="cpu",
            steps: int = 10, warmup: int = 3, backend: str = "auto", scale: str = "full") -> list:
    """Median per-step times (s) of each phase, and memory, for one model × base optimizer, one
    result per mode. The modes run on separate copies of the model (same initial weights), step by
    step in alternation, so background load on a shared machine hits them alike."""
    device = torch.device(device)
    runs = [_Run(model_name, base, m, device, backend, scale) for m in modes]
    for i in range(warmup + steps):
        k = i % len(runs)
        for run in runs[k:] + runs[:k]:
            run.step(record=i >= warmup)
    out = []
    for run in runs:
        times = {k: median([r[k] for r in run.rows]) for k in run.rows[0]}
        out.append(dict(model=model_name, base=base, mode=run.mode, impl=run.opt._bench_impl,
                        params=num_params(run.model), steps=steps, times_s=times,
                        tensor_bytes=tensor_bytes(run.model, run.opt)))
    if device.type == "cuda":
        peaks = _cuda_peaks(model_name, base, modes, device, backend, scale)
        for r in out:
            r["peak_bytes"] = peaks[r["mode"]]
    del runs
    gc.collect()
    return out


def _cuda_peaks(model_name, base, modes, device, backend, scale) -> dict:
    """Peak allocated bytes over two steps of each mode alone (CUDA only)."""
    peaks = {}
    for m in modes:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base_bytes = torch.cuda.memory_allocated(device)
        run = _Run(model_name, base, m, device, backend, scale)
        for _ in range(2):
            run.step(record=False)
        sync(device)
        peaks[m] = torch.cuda.max_memory_allocated(device) - base_bytes
        del run
    return peaks


def add_ratios(results: list) -> list:
    """QLAB step / torch step of the same model and base, beside the floor 1 + F/(F+B) (F and B
    from the torch run)."""
    ref = {(r["model"], r["base"]): r for r in results if r["mode"] == "torch"}
    for r in results:
        t = ref.get((r["model"], r["base"]))
        if t is None:
            continue
        f, b = t["times_s"]["forward"], t["times_s"]["backward"]
        r["floor"] = 1.0 + f / (f + b)
        r["step_ratio"] = r["times_s"]["total"] / t["times_s"]["total"]
        r["mem_ratio"] = r["tensor_bytes"] / t["tensor_bytes"]
    return results
