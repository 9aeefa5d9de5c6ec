"""GPU-only checks run by ``bench/gpu_check.sh``: (1) every QLAB step is free of host
synchronisation (``torch.cuda.set_sync_debug_mode("error")``) per backend × optimizer × probe;
(2) low precision on the GPU: a bf16 model, and an fp32 model under bf16 autocast, against fp32 —
final loss and median α (a smoke check; the probe floor, docs/quality.md log item 30, was measured on
CPU only);
(3) the optimizer step can be captured in a CUDA graph and replayed — the two passes alone, and the
whole ``opt.step(closure, loss=loss)`` (probe forward included, the user's training forward and
backward outside), with the replayed result compared against eager steps and both timed.

    python bench/gpu_checks.py OUT.json

Every check is independent: a failure is recorded (with its message) and the next check runs.
"""
import copy
import json
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

import qlab_fused as qf
from qlab_fused.contract import DIR_V, SC_ALPHA, scalars

DEV = torch.device("cuda")
OPTS = {"sgd": (qf.QLABSGD, dict(alpha0=1e-2)),
        "momentum": (qf.QLABSGD, dict(alpha0=1e-2, momentum=0.9)),
        "adam": (qf.QLABAdam, dict(alpha0=1e-3))}


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 10)).to(DEV)


def _data():
    g = torch.Generator(device=DEV).manual_seed(1)
    return (torch.randn(128, 256, device=DEV, generator=g),
            torch.randint(0, 10, (128,), device=DEV, generator=g))


def _err(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} (at {where})"


def sync_free(backend, kind, probe):
    model, (x, y) = _model(), _data()
    cls, kw = OPTS[kind]
    opt = cls(model.parameters(), backend=backend, probe=probe, **kw)

    def closure():
        return F.cross_entropy(model(x), y)

    for _ in range(3):  # compile, allocate, first-step paths
        opt.step(closure)
    torch.cuda.synchronize()
    out = {}
    try:  # the optimizer's part only: zero_grad and step(closure, loss=loss)
        opt.zero_grad()
        loss = closure()
        loss.backward()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(closure, loss=loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        out["step_with_loss"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["step_with_loss"] = _err(exc)
    try:  # the whole step(closure), the training forward and backward included
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(closure)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        out["step_closure"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["step_closure"] = _err(exc)
    return out


def graph_passes(backend, kind, probe, numel=1 << 24):
    """Capture probe_pass + update_pass with a fixed sc; replay vs eager on a twin; timings."""
    cls, kw = OPTS[kind]

    def build():
        g = torch.Generator(device=DEV).manual_seed(0)
        p = nn.Parameter(torch.randn(numel, device=DEV, generator=g))
        p.grad = torch.randn(numel, device=DEV, generator=g) * 1e-2
        opt = cls([p], backend=backend, probe=probe, **kw)
        (seg,) = opt._segments
        seg.attach_grads()
        sc = scalars(torch.tensor(2.0, device=DEV), torch.tensor(True, device=DEV),
                     torch.tensor(1e-3, device=DEV), seg.hyper)
        sc[SC_ALPHA] = 1e-3

        def run():
            seg.backend.probe_pass(seg.master, seg.work, seg.grad, seg.states, sc, seg.hyper, DIR_V)
            seg.backend.update_pass(seg.master, seg.work, seg.grad, seg.states, sc, seg.hyper,
                                    DIR_V, seg.inplace)
        return opt, seg, run

    _, seg_e, run_e = build()
    _, seg_g, run_g = build()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            run_g()
            run_e()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_g()
    for _ in range(5):
        graph.replay()
        run_e()
    torch.cuda.synchronize()
    diff = (seg_g.master - seg_e.master).abs().max().item()
    t = {}
    for name, fn in (("eager", run_e), ("graph", graph.replay)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t[name + "_ms"] = (time.perf_counter() - t0) / 20 * 1e3
    return {"captured": "ok", "max_abs_diff_vs_eager": diff, "numel": numel, **t}


def low_precision(backend, kind, steps=60):
    """The same training (no dropout) in fp32, as a bf16 model, and as an fp32 model whose forward
    runs under bf16 autocast: final loss and median α of each, with the GPU backend's bf16 passes.
    A smoke check: on CPU (DEV set to cpu) the three end at 1.54-1.78 with median α alike, and this
    short run does not reproduce the sinking α that the probe floor cures (docs/quality.md, log item
    30), which is left to bench/quality/bf16.py."""
    cls, kw = OPTS[kind]
    g = torch.Generator(device=DEV).manual_seed(2)
    X = torch.randn(8192, 256, device=DEV, generator=g)  # a noisy teacher: nothing to memorise
    teacher = torch.randn(256, 10, device=DEV, generator=g) / 16
    Y = (X @ teacher + torch.randn(8192, 10, device=DEV, generator=g)).argmax(1)
    out = {}
    for setting in ("fp32", "bf16", "autocast"):
        m = _model()
        m.eval()
        if setting == "bf16":
            m = m.to(torch.bfloat16)
        opt = cls(m.parameters(), backend=backend, **kw)

        def loss_on(x, y):
            with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=setting == "autocast"):
                logits = m(x.to(next(m.parameters()).dtype))
            return F.cross_entropy(logits.float(), y)

        order = torch.randint(0, 8192, (steps, 128), device=DEV, generator=g)
        alphas = []
        for i in range(steps):
            opt.step(lambda: loss_on(X[order[i]], Y[order[i]]))
            alphas.append(opt.alpha.reshape(()))
        alphas = torch.stack(alphas).float().sort().values
        with torch.no_grad():
            out[setting] = {"final_loss": float(loss_on(X, Y)), "median_alpha": float(alphas[steps // 2])}
    return out


def graph_step(backend, kind, probe):
    """Capture opt.step(closure, loss=static_loss) (probe forward, rule and passes) and replay it,
    the training forward/backward eager outside the graph; compare with an eager twin."""
    cls, kw = OPTS[kind]
    x, y = _data()
    models, opts = [], []
    for _ in range(2):
        m = _model()
        m.eval()  # no dropout: graph and eager twin see the same function
        models.append(m)
        opts.append(cls(m.parameters(), backend=backend, probe=probe, **kw))
    (mg, me), (og, oe) = models, opts
    static_loss = torch.zeros((), device=DEV)

    def closure_g():
        return F.cross_entropy(mg(x), y)

    def closure_e():
        return F.cross_entropy(me(x), y)

    def fwd_bwd(m, o, c):
        o.zero_grad()
        loss = c()
        loss.backward()
        return loss

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            for m, o, c in ((mg, og, closure_g), (me, oe, closure_e)):
                loss = fwd_bwd(m, o, c)
                o.step(c, loss=loss)
    torch.cuda.current_stream().wait_stream(s)
    loss = fwd_bwd(mg, og, closure_g)
    static_loss.copy_(loss.detach())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        og.step(closure_g, loss=static_loss)
    # the capture did not run the step: run the eager twin's matching step only from here on
    steps = 5
    for _ in range(steps):
        loss = fwd_bwd(mg, og, closure_g)
        static_loss.copy_(loss.detach())
        graph.replay()
        loss_e = fwd_bwd(me, oe, closure_e)
        oe.step(closure_e, loss=loss_e)
    torch.cuda.synchronize()
    diff = max((a - b).abs().max().item() for a, b in zip(mg.parameters(), me.parameters()))
    return {"captured": "ok", "replays": steps, "max_param_diff_vs_eager": diff,
            "alpha_graph": float(og.alpha), "alpha_eager": float(oe.alpha)}


def main(path):
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "backends": {k: v or "available" for k, v in qf.backends("cuda").items()},
           "sync_free": {}, "low_precision": {}, "graph_passes": {}, "graph_step": {}}
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    names = [b for b in ("cuda", "triton", "torch") if qf.backends("cuda")[b] is None]
    # sync checks first, then low precision, graph captures last: a failed capture cannot spoil the
    # other checks. Each check: (section, key, thunk).
    checks = [("sync_free", f"{b}/{kind}/{probe}", (lambda b=b, kind=kind, probe=probe:
                                                     sync_free(b, kind, probe)))
              for b in names for kind in OPTS for probe in ("inplace", "copy")]
    checks += [("low_precision", f"{b}/{kind}", (lambda b=b, kind=kind: low_precision(b, kind)))
               for b in names[:1] for kind in OPTS]  # the first backend (cuda where built)
    checks += [(section, f"{b}/{kind}/{probe}", (lambda fn=fn, b=b, kind=kind, probe=probe:
                                                 fn(b, kind, probe)))
               for section, fn in (("graph_passes", graph_passes), ("graph_step", graph_step))
               for b in names for kind in OPTS for probe in ("inplace", "copy")]
    for section, key, thunk in checks:
        try:
            res[section][key] = thunk()
        except Exception as exc:  # noqa: BLE001 - recorded, next check runs
            res[section][key] = {"error": _err(exc)}
        try:
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - a broken context: say so, go on
            res[section][key]["sync_after"] = _err(exc)
        print(section, key, json.dumps(res[section][key]), flush=True)
        with open(path, "w") as f:  # after every check: a timeout keeps the rest
            json.dump(res, f, indent=1)
    bad = [k for sec in ("sync_free",) for k, v in res[sec].items()
           if any(str(x) != "ok" for x in v.values())]
    print(f"sync-free failures: {len(bad)} {bad}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu_checks.json"))
