"""Steps longer or shorter than the fitted one, behind docs/quality.md log items 43 and 44.

    python -m bench.quality.long_steps scale --task digits_lstm --scales 1,1.5,2,silver --seeds 0,1,2
    python -m bench.quality.long_steps horizon --task digits_lstm --ks 1,5,20,60,100,140,166
    python -m bench.quality.long_steps horizon --task digits_lstm --ks 1,5,20,60 --at 0.5
    python -m bench.quality.long_steps blocks --task ratings_mf --base adam --block 10
    python -m bench.quality.long_steps search --task ratings_mf --base adam --block 20,40
    python -m bench.quality.long_steps share --task selection --base adam
    python -m bench.quality.long_steps relstep --task selection --base adam
    python -m bench.quality.long_steps relcap --task lasso_logistic,graph_gat --base adam --caps 0.02,0.03

Every mode takes a QLAB default run (α₀ = 0.01) and, after each step the optimizer takes, extends
it to s·α·V (the optimizer's own state is left as it was: its next fit does not know). ``scale``: s
for the whole run, a constant or ``silver`` (Altschuler and Parrilo's long-step schedule for smooth
convex gradient descent, s_t = 1 + ρ^(v(t)−1), ρ = 1 + √2, v(t) the 2-adic valuation of t, capped at
8); prints the final train loss over plain X's at its best grid lr, same seed. ``horizon``: the run
is branched at a quarter of its steps (``--at``); each branch takes the next k steps (the same
batches and dropout masks) with s = 0.5, 1 or 2; prints, per k, each branch's training-set loss and
the mean of its batch losses over the window, over the s = 1 branch's. ``blocks``: what one run
could see of the same comparison, in sequence: s = 1 and s = 0.5 alternate in blocks of B steps, and
each 0.5-block's mean batch loss is compared with the mean of its two neighbouring 1-blocks (a
linear trend cancels); prints the mean of those contrasts, its standard error and the mean over the
second half of the run. ``search``: what two branches from one state would buy, paid for with twice
the training compute: every window of B steps both s and s·f (f = 0.5 and 2 in turn) run from one
state on the same batches, the one with the lower mean batch loss over the window's second half is
kept and the run goes on from it; prints the final train loss over plain X's at its best grid lr and
the last s. ``share`` (log item 44): s follows how much of the steps' decrease on their own batches
the next batches see, s = clamp(Ē_next / Ē_own / r0, floor, 1), with Ē the EMAs (decay 0.95) of the
decrease over each step on the next batch (one more forward, the next batch at the old parameters)
and on the step's own batch (at one dropout mask), from step 10 on; prints the final train loss over
plain X's at its best grid lr, the median s and the median share. ``relstep`` (log item 66): how far
each step moves θ, |Δθ|/|θ|, in the default run and in plain X's run at its best grid lr; prints
the medians over each half of the runs. ``relcap``: every step of the default run longer than
c·|θ| is shortened to that length (the optimizer's state left as it was, as in ``scale``); prints
the final train loss over plain X's and how many steps were shortened.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
from multiprocessing import get_context

import torch

RHO = 1 + math.sqrt(2)
SILVER_CAP = 8.0
BRANCH_SCALES = (0.5, 1.0, 2.0)
RULE = None  # QLAB's rule (None: the default); --rule sets it before the workers fork


def silver(t: int) -> float:
    """The silver step multiple of step t ≥ 1: √2, 2, √2, 1 + ρ, √2, 2, √2, 1 + ρ², … (capped)."""
    v = (t & -t).bit_length() - 1  # 2-adic valuation
    return min(SILVER_CAP, 1 + RHO ** (v - 1))


def _setup(task_name, base, seed, lr=None):
    """The task, its parameters and the protocol's QLAB-X (α₀ = 0.01), or plain X at ``lr``."""
    from bench.quality.run import make_optimizer
    from bench.quality.tasks import TASKS
    torch.set_num_threads(1)
    task = TASKS[task_name](seed)
    params = list(task.model.parameters())
    if lr is not None:
        return task, params, make_optimizer(base, params, lr, None)
    return task, params, make_optimizer("qlab_" + base, params, 0.01, RULE)


def _step(task, params, opt, x, y, s: float) -> float:
    """One optimizer step, then the displacement it made stretched to s times its length."""
    before = [p.detach().clone() for p in params]
    loss = float(opt.step(lambda: task.loss(task.model, x, y)))
    if s != 1.0:
        with torch.no_grad():
            for p, b in zip(params, before):
                p.add_((p - b) * (s - 1))
    return loss


def scaled_run(task_name: str, base: str, seed: int, scale: str) -> float:
    """Final train loss of a default run whose every step is stretched by ``scale`` (a number or
    'silver')."""
    task, params, opt = _setup(task_name, base, seed)
    for i, (x, y) in enumerate(task.batches()):
        _step(task, params, opt, x, y, silver(i + 1) if scale == "silver" else float(scale))
    return task.train_loss(task.model)


def rel_length(params, before) -> float:
    """|θ − θ_before| / |θ_before|: how far a step moved the parameters, relative to where it
    started (inf where they started at 0 and moved)."""
    moved = math.sqrt(sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(params, before)))
    size = math.sqrt(sum(float(b.pow(2).sum()) for b in before))
    return moved / size if size > 0 else (math.inf if moved > 0 else 0.0)


def rel_steps(task_name: str, base: str, seed: int, lr: float | None = None):
    """(final train loss, each step's relative length) of the default run (``lr`` None) or of
    plain X at ``lr``, stepped as the protocol steps them (bench/quality/run.py)."""
    task, params, opt = _setup(task_name, base, seed, lr)
    rels = []
    for x, y in task.batches():
        before = [p.detach().clone() for p in params]
        if lr is None:
            opt.step(lambda: task.loss(task.model, x, y))
        else:
            opt.zero_grad()
            task.loss(task.model, x, y).backward()
            opt.step()
        rels.append(rel_length(params, before))
    return task.train_loss(task.model), rels


def cap_step(params, before, cap: float) -> bool:
    """Shorten the step from ``before`` to ``params`` to cap·|θ_before| if it is longer (its
    direction kept); whether it was."""
    rel = rel_length(params, before)
    if not rel > cap:
        return False
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b + (p - b) * (cap / rel))
    return True


def capped_run(task_name: str, base: str, seed: int, cap: float):
    """(final train loss, steps shortened) of a default run whose steps move θ by at most
    cap·|θ|."""
    task, params, opt = _setup(task_name, base, seed)
    shortened = 0
    for x, y in task.batches():
        before = [p.detach().clone() for p in params]
        opt.step(lambda: task.loss(task.model, x, y))
        shortened += cap_step(params, before, cap)
    return task.train_loss(task.model), shortened


def _snapshot(model, opt):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), torch.get_rng_state()


def _restore(model, opt, snap):
    model.load_state_dict(snap[0])
    opt.load_state_dict(copy.deepcopy(snap[1]))  # one optimizer: a second would re-flatten the params
    torch.set_rng_state(snap[2])


def horizon(task_name: str, base: str, seed: int, ks, at: float = 0.25):
    """({k: {s: (train loss, mean batch loss over the window) / the s = 1 branch's}}, branch step,
    final train loss of the unbranched run)."""
    task, params, opt = _setup(task_name, base, seed)
    model, batches = task.model, list(task.batches())
    start = int(task.steps * at)
    for x, y in batches[:start]:
        _step(task, params, opt, x, y, 1.0)
    saved = _snapshot(model, opt)
    branches = {}
    for s in BRANCH_SCALES:
        _restore(model, opt, saved)
        losses, row = [], {}
        for k, (x, y) in enumerate(batches[start:], start=1):
            losses.append(_step(task, params, opt, x, y, s))
            if k in ks:
                row[k] = (task.train_loss(model), sum(losses) / len(losses))
            if k >= max(ks):
                break
        branches[s] = row
    final = branches[1.0].get(len(batches) - start, (None,))[0]
    rel = {k: {s: tuple(a / b for a, b in zip(branches[s][k], branches[1.0][k])) for s in BRANCH_SCALES}
           for k in branches[1.0]}
    return rel, start, final


def block_contrasts(task_name: str, base: str, seed: int, block: int, alt: float = 0.5):
    """Contrasts b_j / mean(b_{j−1}, b_{j+1}) − 1 of the mean batch losses b of the s = ``alt``
    blocks (odd j) of a run whose steps are scaled by 1 and ``alt`` in alternating blocks."""
    task, params, opt = _setup(task_name, base, seed)
    losses = [_step(task, params, opt, x, y, alt if (i // block) % 2 else 1.0)
              for i, (x, y) in enumerate(task.batches())]
    means = [sum(losses[k:k + block]) / block for k in range(0, len(losses) - block + 1, block)]
    return [means[j] / ((means[j - 1] + means[j + 1]) / 2) - 1 for j in range(1, len(means) - 1, 2)]


def scale_search(task_name: str, base: str, seed: int, block: int):
    """(final train loss, the scale kept after each window) of a run whose step scale is chosen
    every ``block`` steps between two branches from one state (module docstring)."""
    task, params, opt = _setup(task_name, base, seed)
    model, batches = task.model, list(task.batches())
    s, kept = 1.0, []
    for w, i in enumerate(range(0, len(batches), block)):
        window = batches[i:i + block]
        if len(window) < block:  # the ragged tail: no trial
            for x, y in window:
                _step(task, params, opt, x, y, s)
            break
        start, ends = _snapshot(model, opt), {}
        for cand in (s, s * (0.5 if w % 2 == 0 else 2.0)):
            _restore(model, opt, start)
            losses = [_step(task, params, opt, x, y, cand) for x, y in window]
            late = sum(losses[block // 2:]) / (block - block // 2)
            ends[cand] = (late if math.isfinite(late) else math.inf, _snapshot(model, opt))
        s = min(ends, key=lambda c: ends[c][0])
        _restore(model, opt, ends[s][1])
        kept.append(s)
    return task.train_loss(model), kept


def share_scaled_run(task_name: str, base: str, seed: int, r0: float = 0.2, floor: float = 0.25,
                     decay: float = 0.95):
    """(final train loss, median s, median share) of a default run whose every step is scaled by
    s = clamp(share / r0, floor, 1), the share the EMA of the next batches' decrease over the EMA
    of the own batches' decrease (module docstring); the scale is set before the step it scales."""
    from bench.quality.split_signal import _frozen_loss, next_batch_decrease
    task, params, opt = _setup(task_name, base, seed)
    model = task.model
    previous, e_next, e_own, s, scales, shares = None, 0.0, 0.0, 1.0, [], []
    for i, (x, y) in enumerate(task.batches()):
        if previous is not None:
            e_next = decay * e_next + (1 - decay) * next_batch_decrease(task, params, previous, x, y)
        if i >= 10 and e_own > 0:
            shares.append(e_next / e_own)
            s = min(1.0, max(floor, shares[-1] / r0))
        previous = [p.detach().clone() for p in params]
        own = _frozen_loss(task, model, x, y)
        _step(task, params, opt, x, y, s)
        e_own = decay * e_own + (1 - decay) * (own - _frozen_loss(task, model, x, y))
        scales.append(s)
    return (task.train_loss(model), statistics.median(scales),
            statistics.median(shares) if shares else math.nan)


def _call(job):
    fn, args = job
    return args, fn(*args)


def _map(fn, jobs):
    """[(args, fn(*args))] over the jobs, two single-threaded workers."""
    with get_context("fork").Pool(2) as pool:
        return pool.map(_call, [(fn, args) for args in jobs])


def main(argv=None):
    from bench.quality.analyze import best_plain, load
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["scale", "horizon", "blocks", "search", "share", "relstep",
                                     "relcap"])
    ap.add_argument("--task", default="digits_lstm",
                    help="comma list, or 'selection' (share, relstep, relcap)")
    ap.add_argument("--base", default="sgd", help="sgd, momentum or adam")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--scales", default="1,2", help="scale: constants and/or 'silver'")
    ap.add_argument("--ks", default="1,5,20,60", help="horizon: window lengths (steps after the branch)")
    ap.add_argument("--at", default="0.25", help="horizon: where to branch, fractions of the run")
    ap.add_argument("--block", default="10", help="blocks, search: block lengths, comma list")
    ap.add_argument("--share", default="0.2,0.25", help="share: r0 and the floor of s")
    ap.add_argument("--caps", default="0.02,0.03", help="relcap: the longest steps, in |θ|")
    ap.add_argument("--rule", default=None, help="a rule instead of the base's default (log items 43 "
                    "and 44 measured Adam with alternate_trust_ema_rel_near_match_guard_len)")
    args = ap.parse_args(argv)
    global RULE
    RULE = args.rule
    tasks, seeds = args.task.split(","), [int(s) for s in args.seeds.split(",")]
    if args.task == "selection" and args.mode in ("relstep", "relcap"):
        from bench.quality.tasks import SELECTION
        tasks = sorted(SELECTION)
    if args.mode == "relstep":
        best = best_plain(load())
        keys = [(t, s) for t in tasks for s in seeds]
        jobs = [(t, args.base, s) for t, s in keys]
        jobs += [(t, args.base, s, best[(t, args.base, s)][1]) for t, s in keys]
        res = dict(_map(rel_steps, jobs))
        for t, s in keys:
            plain, lr = best[(t, args.base, s)]
            (q, qr), (_, pr) = res[(t, args.base, s)], res[(t, args.base, s, lr)]
            (q1, q2), (p1, p2) = [(statistics.median(r[:len(r) // 2]),
                                   statistics.median(r[len(r) // 2:])) for r in (qr, pr)]
            print(f"{t:22s} seed {s}  ratio {q / plain:5.2f}  relative step % (first half, second "
                  f"half): QLAB {100 * q1:.3f}, {100 * q2:.3f}  X at lr {lr:g} {100 * p1:.3f}, "
                  f"{100 * p2:.3f}")
        return
    if args.mode == "relcap":
        caps = [float(c) for c in args.caps.split(",")]
        res = _map(capped_run, [(t, args.base, s, c) for t in tasks for s in seeds for c in caps])
        best = best_plain(load())
        for (t, b, s, c), (final, shortened) in res:
            print(f"{t:22s} seed {s}  cap {c:g}  ratio {final / best[(t, b, s)][0]:5.2f}  "
                  f"{shortened} steps shortened")
        return
    if args.mode == "share":
        from bench.quality.tasks import SELECTION
        if args.task == "selection":
            tasks = [t for t in SELECTION if t != "convex_softmax"]  # full batch: no next batch
        r0, floor = (float(v) for v in args.share.split(","))
        res = _map(share_scaled_run, [(t, args.base, s, r0, floor) for t in tasks for s in seeds])
        best = best_plain(load())
        for (t, b, s, _, _), (final, scale, share) in res:
            print(f"{t:22s} seed {s}  ratio {final / best[(t, b, s)][0]:5.2f}  median s {scale:.2f}  "
                  f"median share {share:.3f}")
        return
    if args.mode == "scale":
        jobs = [(t, args.base, s, sc) for t in tasks for s in seeds for sc in args.scales.split(",")]
        res = _map(scaled_run, jobs)
        best = best_plain(load())
        for (t, b, s, sc), final in res:
            print(f"{t:20s} seed {s}  s {sc:6s}  final {final:.4f}  ratio {final / best[(t, b, s)][0]:.2f}")
        return
    block_jobs = [(t, args.base, s, int(b)) for t in tasks for s in seeds for b in args.block.split(",")]
    if args.mode == "search":
        res = _map(scale_search, block_jobs)
        best = best_plain(load())
        for (t, b, s, block), (final, kept) in res:
            print(f"{t:20s} {b:9s} seed {s}  B {block:3d}  final {final:.4f}  ratio "
                  f"{final / best[(t, b, s)][0]:.2f}  last s {kept[-1] if kept else 1.0:.3g}")
        return
    if args.mode == "blocks":
        for (t, b, s, block), con in _map(block_contrasts, block_jobs):
            se = statistics.stdev(con) / math.sqrt(len(con)) if len(con) > 1 else math.nan
            late = statistics.mean(con[len(con) // 2:])
            print(f"{t:20s} {b:9s} seed {s}  B {block:3d}  {len(con):3d} pairs  contrast "
                  f"{statistics.mean(con):+.3f} ± {se:.3f}  second half {late:+.3f}")
        return
    ks = sorted(int(k) for k in args.ks.split(","))
    for t in tasks:
        for seed in seeds:
            for at in (float(a) for a in args.at.split(",")):
                rel, start, final = horizon(t, args.base, seed, ks, at)
                print(f"{t} seed {seed}: branched at step {start}"
                      + (f"; the s = 1 branch ends at {final:.4f}" if final is not None else ""))
                for k, row in rel.items():
                    print(f"  k {k:4d}  " + "  ".join(f"s {sc:g}: train {v[0]:.3f} batch {v[1]:.3f}"
                                                      for sc, v in row.items() if sc != 1.0))


if __name__ == "__main__":
    main()
