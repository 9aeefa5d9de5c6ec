"""The rule prototype of bench/quality/diagnose.py (used for docs/quality.md log item 11) takes the
same steps as the library's rules where their semantics coincide (descent batches, finite values)."""
import random

import pytest

from bench.quality import diagnose
from qlab_fused import reference
from qlab_fused.contract import DIR_P


@pytest.mark.parametrize("rule,spec", [
    ("alternate_wgeo_ema_rel", dict(combine="wgeo", w=reference.WGEO_V, ema=reference.EMA_DECAY)),
    ("alternate_wgeo_rel", dict(combine="wgeo", w=reference.WGEO_V)),
    ("alternate_geo_v_ema_rel", dict(combine="geov", ema=reference.EMA_DECAY)),
    ("alternate_trust_ema_rel", dict(combine="min", ema=reference.EMA_DECAY, trust=True)),
])
def test_prototype_follows_the_library_rule(rule, spec):
    rng = random.Random(7)
    proto = diagnose.Prototype(**spec)
    alpha0 = 1e-2
    rs = dict(k=0, beta=alpha0, alpha0=alpha0)
    st = reference.RuleState(beta=alpha0)
    for k in range(12):
        red = dict(vg=rng.uniform(0.5, 2), pg=rng.uniform(0.5, 2), vv=rng.uniform(0.5, 2),
                   pp=rng.uniform(0.5, 2), sg=rng.uniform(-1, 1), gg=rng.uniform(0.5, 2),
                   tt=rng.uniform(1, 50))
        L0 = rng.uniform(1, 2)
        beta = st.beta
        assert rs["beta"] == pytest.approx(beta, rel=1e-12)
        pdir = reference.probe_direction(rule, reference.KIND_MOMENTUM, k)
        assert proto.probe(rs)[0] == ("P" if pdir == DIR_P else "V")
        dX = red["pg"] if pdir == DIR_P else red["vg"]
        Lb = L0 - beta * dX + rng.uniform(0.05, 3) * beta ** 2   # a₂ > 0: a fit exists
        a_ref, st = reference.rule_step(rule, L0, Lb, red, beta, st, alpha0, pdir)
        a_proto = proto.step(rs, L0, Lb, red, beta, "P" if pdir == DIR_P else "V")
        assert a_proto == pytest.approx(a_ref, rel=1e-12, abs=1e-300)
