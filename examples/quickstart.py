"""Quickstart: QLAB-Adam on a small regression problem, closure style. Runs in a few seconds on CPU.

    python examples/quickstart.py [--steps 300]
"""
import argparse

import torch

import qlab_fused as qf


def main(steps: int) -> float:
    torch.manual_seed(0)
    X = torch.randn(512, 16)
    y = torch.sin(X @ torch.randn(16, 1)) + 0.05 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    opt = qf.QLABAdam(model.parameters())  # no learning rate to choose
    for step in range(steps):
        idx = torch.randint(0, len(X), (64,))
        loss = opt.step(lambda: torch.nn.functional.mse_loss(model(X[idx]), y[idx]))
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  alpha {opt.alpha.item():.2e}")
    with torch.no_grad():
        final = torch.nn.functional.mse_loss(model(X), y).item()
    print(f"final full-data loss {final:.4f} (backend: {opt.backends_in_use[0]})")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
