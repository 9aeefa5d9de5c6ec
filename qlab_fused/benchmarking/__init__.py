"""Benchmark helpers shared by ``python -m qlab_fused bench`` and the pytest-benchmark suite in
``bench/`` (which is not installed, so everything both need lives here).

- ``micro``: optimizer-step microbenchmarks (QLAB passes on a segment vs torch's own optimizers),
  the SPEC §4 byte model, copy bandwidth, a median timer.
- ``models``: whole training-step profiles on an MLP, a small CNN and a char-level GPT.
- ``report``: text/markdown tables, the JSON record, PNG plots.
"""
