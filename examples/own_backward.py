"""Your own backward: autocast, gradient clipping, and a dropout + BatchNorm model.

The closure is called once more by the optimizer, for the probe, with the training forward's dropout
mask replayed and BatchNorm's running statistics left alone.

    python examples/own_backward.py [--steps 200]
"""
import argparse

import torch

import qlab_fused as qf


def main(steps: int) -> float:
    torch.manual_seed(0)
    X = torch.randn(1024, 20)
    y = (X[:, :5].sum(1) > 0).long() + (X[:, 5:10].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(64, 3))
    opt = qf.QLABAdamW(model.parameters(), weight_decay=1e-4)
    for step in range(steps):
        idx = torch.randint(0, len(X), (128,))

        def closure():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(X[idx])
            return torch.nn.functional.cross_entropy(out.float(), y[idx])

        opt.zero_grad()  # records the RNG state, so the probe replays this step's dropout mask
        loss = closure()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        opt.step(closure, loss=loss)
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  alpha {opt.alpha.item():.2e}")
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    print(f"train accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    main(parser.parse_args().steps)
