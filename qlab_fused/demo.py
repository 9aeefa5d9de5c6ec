"""The demo: an MLP on sklearn's digits, QLAB optimizers against SGD, Momentum and Adam at their usual
default learning rates. Prints a table and writes a PNG of the loss and α curves.

    python -m qlab_fused demo [--epochs 15] [--out qlab_demo.png] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import torch

from .optimizer import QLABAdam, QLABSGD


def load_digits(seed: int):
    """sklearn's 8×8 digits (ships with scikit-learn, no download): standardised, 75/25 split."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    X, y = _load(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = Xtr.mean(0), Xtr.std(0) + 1e-6
    f = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xte), torch.tensor(yte)


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


# name -> (factory(params), is_qlab). Baselines at their usual defaults; QLAB at the same α0.
OPTIMIZERS = {
    "SGD (lr=0.01)": (lambda p: torch.optim.SGD(p, lr=0.01), False),
    "QLAB-SGD": (lambda p: QLABSGD(p, alpha0=0.01), True),
    "Momentum (lr=0.01)": (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), False),
    "QLAB-Momentum": (lambda p: QLABSGD(p, alpha0=0.01, momentum=0.9), True),
    "Adam (lr=1e-3)": (lambda p: torch.optim.Adam(p, lr=1e-3), False),
    "QLAB-Adam": (lambda p: QLABAdam(p, alpha0=1e-3), True),
}


def train(name, data, epochs: int, batch: int, seed: int, bar=None, make=None,
          is_qlab=None) -> dict:
    """One run of the demo's MLP with the optimizer ``OPTIMIZERS[name]``, or ``make(params)``
    (``is_qlab``: whether it takes a closure) where given: per-epoch train loss, α, test accuracy."""
    Xtr, ytr, Xte, yte = data
    model = mlp(seed)
    if make is None:
        make, is_qlab = OPTIMIZERS[name]
    opt = make(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    losses, alphas = [], []
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xtr), generator=gen).split(batch):
            xb, yb = Xtr[idx], ytr[idx]
            closure = lambda: torch.nn.functional.cross_entropy(model(xb), yb)  # noqa: E731
            if is_qlab:
                opt.step(closure)
                alphas.append(opt.alpha.item())  # outside step(): reading α for the plot
            else:
                opt.zero_grad()
                closure().backward()
                opt.step()
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(model(Xtr), ytr).item())
        if bar is not None:
            bar.update(1)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
    return {"name": name, "loss": losses, "alpha": alphas, "acc": acc, "seconds": seconds}


def plot(results: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        style = "-" if r["alpha"] else "--"
        ax1.plot(range(1, len(r["loss"]) + 1), r["loss"], style, label=r["name"])
        if r["alpha"]:
            ax2.plot(r["alpha"], label=r["name"], lw=0.8)
    ax1.set(xlabel="epoch", ylabel="train loss (full train set)", yscale="log",
            title="Digits MLP 64-128-10")
    ax2.set(xlabel="step", ylabel="α chosen by QLAB", yscale="log", title="QLAB step sizes")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qlab_fused demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="qlab_demo.png", help="where to write the PNG")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    torch.set_num_threads(1)  # tiny model: threads only add noise
    data = load_digits(args.seed)
    results = []
    with tqdm(total=len(OPTIMIZERS) * args.epochs, desc="training", unit="epoch") as bar:
        for name in OPTIMIZERS:
            bar.set_postfix_str(name)
            results.append(train(name, data, args.epochs, args.batch, args.seed, bar))
    print(f"\n{'optimizer':<20} {'train loss':>11} {'test acc':>9} {'seconds':>8}")
    for r in results:
        print(f"{r['name']:<20} {r['loss'][-1]:>11.4f} {r['acc']:>9.3f} {r['seconds']:>8.2f}")
    plot(results, args.out)
    print(f"\nwrote {args.out} (loss curves, and α per step for the QLAB optimizers)")
    return 0
