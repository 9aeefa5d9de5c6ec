"""The split-half signal fraction behind docs/quality.md log item 43: how much of a batch gradient's
squared norm is signal, measured along a QLAB default run.

    python -m bench.quality.split_signal --task selection --base sgd,momentum,adam

At eight evenly spaced steps of a run (seed 0, α₀ = 0.01, the default rule) the batch is split in
two halves A and B and both gradients are taken at the current parameters (extra backward passes,
outside the run: the RNG stream and BatchNorm's statistics are restored afterwards). With G = (G_A +
G_B)/2, E⟨G_A, G_B⟩ = |∇L|² and E|G|² = |∇L|² + tr(Σ)/n, so ⟨G_A, G_B⟩/|G|² estimates the share of
the batch's squared gradient norm that the training set shares: the factor by which noise inflates a
batch's own line minimum along its gradient (McCandlish et al. 2018, "An empirical model of
large-batch training"). It needs two gradients at one point, which one step of the optimizer does
not have. Printed per task: the median over the eight points, the run's median α, plain X's best
grid lr at seed 0 and their ratio, and the run's final loss over X at that lr; per base, the rank
correlation of the fraction with log(α / best lr).

Beside it, at the same points, the step's decrease shares (log item 44): the decrease of the loss over
the step the optimizer took, on the whole training set and on the next batch of the run (both at θ
before and θ after, with one fixed dropout mask), over its decrease on the step's own batch. The
training-set share is the quantity log item 42 read off its grids (how much of a step's batch
decrease is training-set decrease); the next batch's is the estimate of it a rule could make with one
more forward pass (the next batch at the old parameters). Each is the ratio of the sums over the
eight points, with their rank correlations with log(α / best lr).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
from multiprocessing import get_context

import torch

POINTS = 8
RULE = None  # QLAB's rule (None: the default); --rule sets it before the workers fork
MASK_SEED = 20_260_411  # one dropout mask for the before/after losses: their difference is the step's


def signal_fraction(grads_a, grads_b) -> float:
    """⟨G_A, G_B⟩ / |(G_A + G_B)/2|² over matching lists of tensors (None entries skipped)."""
    cross = norm = 0.0
    for a, b in zip(grads_a, grads_b):
        if a is None or b is None:
            continue
        cross += float((a.double() * b.double()).sum())
        norm += float((((a.double() + b.double()) / 2) ** 2).sum())
    return cross / norm if norm > 0 else math.nan


def rank_correlation(xs, ys) -> float:
    """Spearman's rank correlation of two equally long sequences without ties."""
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0] * len(v)
        for k, i in enumerate(order):
            r[i] = k
        return r
    rx, ry, m = ranks(xs), ranks(ys), (len(xs) - 1) / 2
    return (sum((a - m) * (b - m) for a, b in zip(rx, ry)) / sum((a - m) ** 2 for a in rx))


@contextlib.contextmanager
def _no_trace(model):
    """Extra forwards inside leave the run as it was: the RNG stream (dropout) and the model's
    buffers (BatchNorm's running statistics) are restored on the way out."""
    rng = torch.get_rng_state()
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, c in zip(model.buffers(), buffers):
                b.copy_(c)
        torch.set_rng_state(rng)


def _half_gradients(task, model, params, x, y):
    """The two halves' gradients at the current parameters, leaving no trace on the run."""
    n = len(y) // 2
    with _no_trace(model):
        return [torch.autograd.grad(task.loss(model, xs, ys), params, allow_unused=True)
                for xs, ys in ((x[:n], y[:n]), (x[n:2 * n], y[n:2 * n]))]


def _frozen_loss(task, model, x, y) -> float:
    """The batch loss as the optimizer sees it (training mode) with one fixed dropout mask, leaving
    no trace on the run."""
    with _no_trace(model), torch.no_grad():
        torch.manual_seed(MASK_SEED)
        return float(task.loss(model, x, y))


def _at(params, values):
    """Copies ``values`` into ``params``; returns what they held."""
    held = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    return held


def next_batch_decrease(task, params, previous, x, y) -> float:
    """The decrease of this batch's loss (one mask) from the parameters ``previous`` to the current
    ones: the last step as an independent batch sees it, at the cost of one more forward."""
    after = _frozen_loss(task, task.model, x, y)
    now = _at(params, previous)
    before = _frozen_loss(task, task.model, x, y)
    _at(params, now)
    return before - after


def share(decreases, k: int) -> float:
    """Σ decrease k / Σ batch decrease over the points ((batch, training set, next batch) each)."""
    batch = sum(d[0] for d in decreases)
    return sum(d[k] for d in decreases) / batch if batch > 0 else math.nan


def run(task_name: str, base: str, seed: int = 0, alpha0: float = 0.01):
    """(fractions at the eight points, median α of the run, final train loss, decreases at the eight
    points: (own batch, training set, next batch) over the step taken). Each fraction is at most 1
    (|G_A − G_B|² ≥ 0) and is negative where the halves disagree."""
    from bench.quality.run import make_optimizer
    from bench.quality.tasks import TASKS
    torch.set_num_threads(1)
    task = TASKS[task_name](seed)
    model = task.model
    params = list(model.parameters())
    opt = make_optimizer("qlab_" + base, params, alpha0, RULE)  # the protocol's QLAB-X
    at = {int(task.steps * (k + 0.5) / POINTS) for k in range(POINTS)}
    fractions, alphas, decreases, pending = [], [], [], None
    for i, (x, y) in enumerate(task.batches()):
        if pending is not None:  # the previous point's step, on this (the next) batch
            decreases.append(pending[1] + (next_batch_decrease(task, params, pending[0], x, y),))
            pending = None
        measured = i in at and not task.full_batch
        if measured:
            fractions.append(signal_fraction(*_half_gradients(task, model, params, x, y)))
            theta = [p.detach().clone() for p in params]
            batch0, train0 = _frozen_loss(task, model, x, y), task.train_loss(model)
        opt.step(lambda: task.loss(model, x, y))
        alphas.append(float(opt.alpha))
        if measured:
            pending = (theta, (batch0 - _frozen_loss(task, model, x, y),
                               train0 - task.train_loss(model)))
    median = sorted(alphas)[len(alphas) // 2]  # run_one's median
    return fractions, median, task.train_loss(model), decreases


def _job(args):
    return args + run(*args)


def main(argv=None):
    from bench.quality.analyze import best_plain, load
    from bench.quality.tasks import SELECTION
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="selection", help="comma list, or 'selection'")
    ap.add_argument("--base", default="sgd,momentum,adam", help="comma list of sgd, momentum, adam")
    ap.add_argument("--rule", default=None, help="a rule instead of each base's default (log items 43 "
                    "and 44 measured Adam with alternate_trust_ema_rel_near_match_guard_len)")
    args = ap.parse_args(argv)
    global RULE
    RULE = args.rule
    tasks = SELECTION if args.task == "selection" else tuple(args.task.split(","))
    jobs = [(t, b) for b in args.base.split(",") for t in tasks if t != "convex_softmax"]  # full batch
    with get_context("fork").Pool(2) as pool:
        res = pool.map(_job, jobs)
    best = best_plain(load())
    for base in args.base.split(","):
        print(f"{base}: task, median signal fraction, training-set share, next-batch share, median α, "
              "best grid lr, α / best lr, final / best")
        rows = []
        for task, b, fr, alpha, final, dec in res:
            if b == base:
                ref, lr = best[(task, base, 0)]
                rows.append((statistics.median(fr), share(dec, 1), share(dec, 2), task, alpha, lr,
                             final / ref))
        for frac, s_train, s_next, task, alpha, lr, ratio in sorted(rows, key=lambda r: r[1]):
            print(f"  {task:22s} {frac:7.3f} {s_train:7.3f} {s_next:7.3f}  {alpha:9.3g}  {lr:<7g}  "
                  f"{alpha / lr:7.2f}  {ratio:5.2f}")
        logs = [math.log(r[4] / r[5]) for r in rows]
        print("  rank correlation with log(α / best lr): fraction {:.2f}, training-set share {:.2f}, "
              "next-batch share {:.2f}".format(*(rank_correlation([r[k] for r in rows], logs)
                                                 for k in (0, 1, 2))))


if __name__ == "__main__":
    main()
