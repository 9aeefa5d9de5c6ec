"""Command line: ``python -m qlab_fused demo|bench|backends``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qlab_fused")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train an MLP on sklearn digits: QLAB vs SGD, Momentum, Adam",
                   add_help=False)
    sub.add_parser("bench", help="optimizer-step and training-step benchmarks", add_help=False)
    sub.add_parser("backends", help="which backends can run here, and why not")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    if args.command == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    from .backends import backends
    import torch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for name, reason in backends(dev).items():
            print(f"{dev:5s} {name:7s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
