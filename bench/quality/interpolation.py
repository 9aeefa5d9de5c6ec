"""Does a rule keep what it trained? The demo's digits MLP (qlab_fused/demo.py: 64-128-10, batch 64,
15 epochs) trained into the interpolation regime, which the protocol's tasks avoid by design
(docs/quality.md, log item 35): the final and the smallest per-epoch train loss of each run.

    python -m bench.quality.interpolation --base momentum --rules auto,alternate_wgeo_ema_rel_near_slow
    python -m bench.quality.interpolation --base sgd --rules auto,safeguarded_rel_still_restart
    python -m bench.quality.interpolation --base adam --rules auto --epochs 30   # twice the budget
    python -m bench.quality.interpolation --base adam --plain 1e-3,1e-2 --epochs 30  # torch's Adam
    python -m bench.quality.interpolation --base momentum --epochs 30 --seeds 6,7,8 --tag fresh  # apart

A run "loses what it trained" when it ends above 0.1 (chance level is 2.3). Each run's per-epoch
train losses are stored too, with its largest rebound: the loss over the lowest loss before it, from
the first epoch below 0.01 on (log item 37: where the end of the budget falls on a transient spike
decides a check that reads the final loss alone). Single-threaded, so
reductions, and the numbers, are the same on every run. Each rule's runs are written to
bench/quality/results/interpolation/<base>__<rule>.json (``auto`` under its rule's name), where the
choice of defaults reads them (bench/quality/choose.py: a candidate with a lost run, or since round
15 with a run that rebounds above 100×, is out).
"""
from __future__ import annotations

import argparse
import json

import torch

from bench.quality.run import RESULTS
from qlab_fused import demo
from qlab_fused.contract import KIND_NAMES
from qlab_fused.optimizer import QLABAdam, QLABSGD
from qlab_fused.reference import resolve_rule

LOST = 0.1
OUT = RESULTS / "interpolation"
KINDS = {name: kind for kind, name in KIND_NAMES.items()}  # "sgd" -> KIND_SGD, ...


CHECK_SEEDS = "0,1,2,3,4,5"  # the seeds the choice reads; other seeds need their own --tag


def path_for(base: str, rule: str, epochs: int = 15, tag: str | None = None):
    """Where the check's runs of ``rule`` (a name; not "auto") on ``base`` are stored; a ``tag``
    (runs on other seeds) gets its own file, which the choice does not read."""
    budget = "" if epochs == 15 else f"__{epochs}ep"
    return OUT / f"{base}__{rule}{budget}{f'__{tag}' if tag else ''}.json"


def rebound(losses, below: float = 0.01) -> float:
    """The largest ratio of an epoch's loss to the lowest loss before it, once the loss has been below
    ``below`` (1.0 where it never rises again; 0.0 where it never gets there)."""
    worst, low = 0.0, None
    for x in losses:
        if low is not None:
            worst = max(worst, x / low) if low > 0 else (worst if x == 0 else float("inf"))
            low = min(low, x)
        elif x < below:
            low, worst = x, 1.0
    return worst


def make_plain(base: str, lr: float):
    """The torch optimizer QLAB-``base`` stands in for, at a fixed lr (the check's reference)."""
    if base == "adam":
        return lambda p: torch.optim.Adam(p, lr=lr)
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9 if base == "momentum" else 0.0)


def make(base: str, alpha0: float, rule: str):
    if base == "adam":
        return lambda p: QLABAdam(p, alpha0=alpha0, rule=rule)
    return lambda p: QLABSGD(p, alpha0=alpha0, momentum=0.9 if base == "momentum" else 0.0, rule=rule)


def checks(args) -> list[tuple[str, list]]:
    """(stored rule name, [(α₀ or None, optimizer factory, is_qlab)]) of each check to run."""
    if args.plain:
        return [(f"plain_lr{lr:g}", [(None, make_plain(args.base, lr), False)])
                for lr in (float(x) for x in args.plain.split(","))]
    alpha0s = [float(x) for x in args.alpha0.split(",")]
    return [(resolve_rule(rule, KINDS[args.base]), [(a0, make(args.base, a0, rule), True) for a0 in alpha0s])
            for rule in args.rules.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="momentum", choices=sorted(KINDS))
    ap.add_argument("--rules", default="auto")
    ap.add_argument("--alpha0", default="1e-4,1e-2,1")
    ap.add_argument("--seeds", default=CHECK_SEEDS)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--plain", default=None,
                    help="comma list of lrs: run torch's optimizer at each instead of --rules (stored as "
                         "rule 'plain_lr<lr>'; never a candidate)")
    ap.add_argument("--tag", default=None,
                    help="store the runs apart (…__<tag>.json), out of the choice's reach; needed "
                         "for a rule's check on seeds other than the choice's " + CHECK_SEEDS)
    args = ap.parse_args(argv)
    if args.seeds != CHECK_SEEDS and not args.tag and not args.plain:  # plain runs: never a candidate
        ap.error(f"--seeds {args.seeds} would replace the check the choice reads "
                 f"(seeds {CHECK_SEEDS}); give these runs a --tag")
    torch.set_num_threads(1)
    for name, settings in checks(args):
        lost, worst, runs = [], 0.0, []
        for a0, opt, is_qlab in settings:
            for seed in (int(x) for x in args.seeds.split(",")):
                losses = demo.train(f"{args.base} {name}", demo.load_digits(seed), args.epochs, 64,
                                    seed, make=opt, is_qlab=is_qlab)["loss"]
                rb = rebound(losses)
                where = f"seed {seed}" if a0 is None else f"α₀={a0:g}/seed {seed}"
                print(f"{args.base} {name} {where}: min {min(losses):.2e} "
                      f"final {losses[-1]:.2e} rebound {rb:.3g}", flush=True)
                runs.append(dict(alpha0=a0, seed=seed, min=min(losses), final=losses[-1], rebound=rb,
                                 losses=losses))
                worst = max(worst, losses[-1])
                if not losses[-1] <= LOST:  # NaN too
                    lost.append(f"{where}: {losses[-1]:.3g}")
        print(f"== {args.base} {name}: {len(lost)} runs end above {LOST} ({'; '.join(lost) or 'none'}); "
              f"worst final {worst:.3g}", flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        path_for(args.base, name, args.epochs, args.tag).write_text(json.dumps(dict(
            base=args.base, rule=name, epochs=args.epochs, lost_above=LOST, lost=len(lost), runs=runs),
            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
