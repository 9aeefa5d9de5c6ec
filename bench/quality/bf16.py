"""QLAB-X on bf16 models (docs/quality.md, log items 29, 30): final train loss, steps with α = 0, and
the median α, against plain X in bf16 (X = Adam by default; SGD, Momentum); the fp32 numbers are the
main suite's. Also fp16 models, and fp32 models under bf16 or fp16 autocast.

    python -m bench.quality.bf16 --task digits_mlp,digits_cnn,friedman_mlp,char_transformer
    python -m bench.quality.bf16 --task digits_mlp --loss bf16        # the loss in bf16 as well
    python -m bench.quality.bf16 --task digits_mlp --bases momentum,sgd --lrs 1e-2,0.1,1
    python -m bench.quality.bf16 --task digits_mlp --bases momentum --autocast   # fp32 model, bf16 autocast
    python -m bench.quality.bf16 --task digits_mlp --bases momentum --dtype fp16 # an fp16 model

The task's model is cast to bf16 (``--dtype``) behind fp32 inputs and outputs, or kept in fp32 with its
forward under autocast (``--autocast``); ``--loss fp32``: the loss is computed in fp32 from the
low-precision logits, the usual mixed setup; ``--loss bf16``: from those outputs as they are.
Workers run single-threaded, two at a time.
"""
from __future__ import annotations

import argparse
from multiprocessing import get_context

import torch
from torch import nn


class Bf16Model(nn.Module):
    """A task's model in bf16 (or ``dtype``) behind fp32 inputs; outputs in fp32 unless the loss is
    to be computed in the model's dtype."""

    def __init__(self, model, fp32_out: bool, dtype=torch.bfloat16):
        super().__init__()
        self.m, self.fp32_out, self.dtype = model.to(dtype), fp32_out, dtype

    def forward(self, x):
        out = self.m(x.to(self.dtype) if x.is_floating_point() else x)
        return out.float() if self.fp32_out else out


class AutocastModel(nn.Module):
    """A task's model in fp32 whose forward runs under CPU autocast to bf16 (or ``dtype``: its
    matmuls and convolutions read the parameters in it); outputs in fp32 unless the loss is to be
    computed in that dtype."""

    def __init__(self, model, fp32_out: bool, dtype=torch.bfloat16):
        super().__init__()
        self.m, self.fp32_out, self.dtype = model, fp32_out, dtype

    def forward(self, x):
        with torch.autocast("cpu", dtype=self.dtype):
            out = self.m(x)
        return out.float() if self.fp32_out else out


def run(job: dict) -> dict:
    from bench.quality.run import run_one
    wrap = AutocastModel if job.get("autocast") else Bf16Model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[job.get("dtype", "bf16")]
    return run_one(job, wrap=lambda model: wrap(model, fp32_out=job["loss"] == "fp32", dtype=dtype))


def main(argv=None):
    import warnings
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="digits_mlp")
    ap.add_argument("--bases", default="adam", help="comma list of sgd, momentum, adam")
    ap.add_argument("--rules", default="auto", help="QLAB-X rules, comma list ('auto': the default)")
    ap.add_argument("--alpha0", default="1e-3,0.1")
    ap.add_argument("--lrs", default="1e-3,1e-2,0.1", help="plain X lrs ('' for none)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--loss", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: the loss in the model's low precision (bf16, or fp16 with --dtype fp16)")
    ap.add_argument("--autocast", action="store_true",
                    help="keep the model in fp32 and run its forward under bf16 (--dtype) autocast")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="the closure returned a b?float16 loss")
    jobs = []
    setup = dict(loss=args.loss, autocast=args.autocast, dtype=args.dtype)
    for task in args.task.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for base in args.bases.split(","):
                for lr in (float(v) for v in args.lrs.split(",") if v):
                    jobs.append(dict(task=task, seed=seed, method=base, lr=lr, **setup))
                for rule in args.rules.split(","):
                    for a0 in (float(v) for v in args.alpha0.split(",")):
                        jobs.append(dict(task=task, seed=seed, method="qlab_" + base, lr=a0,
                                         rule=None if rule == "auto" else rule, **setup))
    with get_context("fork").Pool(2) as pool:
        for r in pool.imap(run, jobs):
            extra = ("" if not r["method"].startswith("qlab_") else
                     f"  zero steps {r['zero_steps']}/{r['steps']}  median α {r['alpha_median']:.3g}")
            rule = "" if not r["method"].startswith("qlab_") else r["rule"] or "auto"
            loss = r["final_train_loss"]  # None: the run diverged
            loss = "diverged" if loss is None else f"{loss:.4f}"
            print(f"{r['task']:16s} seed {r['seed']}  {r['method']:13s} {r['lr']:<6g} "
                  f"{rule:48s} loss {loss}{extra}", flush=True)


if __name__ == "__main__":
    main()
