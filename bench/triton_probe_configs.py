"""Launch configurations of the Triton probe pass, timed on a GPU: which (BLOCK_SIZE, num_warps)
``kernels.probe.config`` should return. The probe kernel is not autotuned (its reduction bits depend
on the configuration, see kernels/probe.py), so its configuration is chosen here, once, by measurement.

    python bench/triton_probe_configs.py OUT.json [--numel 1e7,1e9]

Times the whole probe pass (kernel and the fixed-order second stage) with CUDA events, median of
``--reps`` calls after a compile/warm-up call, for each configuration on fp32 Adam, fp32 Momentum
and bf16-work SGD; prints a table and writes every number to OUT.json.
"""
import argparse
import json
import sys

import torch

from qlab_fused.benchmarking import micro
from qlab_fused.contract import KIND_ADAM, KIND_MOMENTUM, KIND_SGD
from qlab_fused.kernels import probe as probe_module

CONFIGS = [(1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (4096, 16)]
CASES = [("adam", "fp32"), ("momentum", "fp32"), ("sgd", "bf16")]
KIND_OF = {"sgd": KIND_SGD, "momentum": KIND_MOMENTUM, "adam": KIND_ADAM}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--numel", default="1e7,1e9", help="comma-separated sizes")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--device", default="cuda", help="cpu: a dry run under TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    default = probe_module.config
    rows = []
    for n, (kind, dtype) in ((int(float(x)), c) for x in args.numel.split(",") for c in CASES):
        case = micro.build("qlab:triton", kind, dtype, n, args.device, probe="copy")
        nbytes = micro.qlab_bytes(kind, micro.DTYPES[dtype], "copy")[0] * n
        for block, warps in CONFIGS:
            probe_module.config = lambda _n, _kind, c=(block, warps): c
            try:
                case.parts["probe"]()  # compile and warm up
                ts = [micro.time_parts({"probe": case.parts["probe"]}, args.device)["probe"]
                      for _ in range(args.reps)]
                t = micro.median(ts)
                rows.append(dict(kind=kind, dtype=dtype, numel=n, block=block, warps=warps,
                                 median_s=t, min_s=min(ts), gbps=nbytes / t / 1e9))
            except Exception as exc:  # noqa: BLE001 - e.g. out of registers: recorded
                rows.append(dict(kind=kind, dtype=dtype, numel=n, block=block, warps=warps,
                                 error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            finally:
                probe_module.config = default
            r = rows[-1]
            print(f"{kind:9s} {dtype} N={n:.3g} BLOCK={block:5d} warps={warps:2d}: "
                  + (f"{r['median_s'] * 1e3:.3f} ms  {r['gbps']:.0f} GB/s" if "error" not in r
                     else r["error"]), flush=True)
        del case
        if args.device == "cuda":
            torch.cuda.empty_cache()
    copy = micro.copy_bandwidth(args.device)
    print(f"copy bandwidth {copy['gbps']:.0f} GB/s")
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                   "torch": torch.__version__,
                   "default": {f"{r['kind']} {r['numel']}": list(default(r["numel"], KIND_OF[r["kind"]]))
                               for r in rows}, "copy": copy, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
