"""bench/quality/zero_steps.py names the reason a step is zero as the rule decides it."""
import math

import pytest

from qlab_fused import reference as R
from qlab_fused.contract import DIR_P, DIR_V

pytest.importorskip("sklearn")
from bench.quality import zero_steps  # noqa: E402

ADAM = R.DEFAULT_RULES[R.KIND_ADAM]  # has `_guard` and the trust test


def _red(vg=0.02, pg=0.05, gg=1.0):
    return dict(vg=vg, pg=pg, vv=1.0, pp=4.0, sg=0.01, gg=gg, tt=100.0, vz=0.0)


def _alpha(L0, Lb, red, beta, probe_dir, st=None):
    st = st or R.RuleState(beta=beta, ema=1e-3, kappa_v=1.0, kappa_p=1.0, length=1e-3)
    return R.rule_step(ADAM, L0, Lb, red, beta, st, 1e-2, probe_dir)[0]


@pytest.mark.parametrize("case, want", [
    (dict(L0=1.0, Lb=math.nan, red=_red(), beta=1e-2, probe_dir=DIR_V), "skipped"),
    (dict(L0=1.0, Lb=1.0, red=_red(vg=0.0, pg=0.0, gg=0.0), beta=1e-2, probe_dir=DIR_V),
     "zero gradient"),
    (dict(L0=1.0, Lb=1.01, red=_red(vg=-0.02), beta=1e-2, probe_dir=DIR_P), "V not descending"),
    # Lβ − L0 + β·d far below 1e-6·L0: the probe moved the loss by rounding only
    (dict(L0=1.0, Lb=1.0 - 1e-2 * 0.02 + 1e-8, red=_red(), beta=1e-2, probe_dir=DIR_V),
     "rounding only"),
    # along P (slope 0.05) the loss rose by 0.05 over β = 1: a fitted minimum at β/4, nearer than
    # β/(TRUST_FAR·reach) = β/2
    (dict(L0=1.0, Lb=1.05, red=_red(), beta=1.0, probe_dir=DIR_P), "too near to trust"),
])
def test_each_reason_names_a_step_the_rule_zeroes(case, want):
    assert _alpha(**case) == 0.0  # the rule itself takes no step there
    args = {k: case[k] for k in ("L0", "Lb", "red", "beta", "probe_dir")}
    assert zero_steps.why_zero(ADAM, **args) == want


def test_a_fit_the_rule_trusts_is_not_called_near():
    # the minimum at 0.8β (slope 0.05, rise 0.05·β·(1 − 1/1.6)): a step is taken, and were it not,
    # the reason would not be the trust test
    red, beta = _red(), 0.1
    Lb = 1.0 - beta * 0.05 + beta * 0.05 / 1.6
    assert _alpha(1.0, Lb, red, beta, DIR_P) > 0
    assert zero_steps.why_zero(ADAM, 1.0, Lb, red, beta, DIR_P) == "other"


def test_a_run_counts_every_step_once_and_reproduces_the_protocol_run():
    import json
    from bench.quality.run import RESULTS
    r = zero_steps.run("digits_distill", "adam", "auto", 1e-2, 0)
    assert r["rule"] == ADAM and r["steps"] == 296
    assert r["taken"] + sum(r[k] for k in zero_steps.REASONS) == r["steps"]
    assert 0 < r["median_alpha"] < 1
    runs = json.loads((RESULTS / "digits_distill__main.json").read_text())["runs"]
    stored = [x["final_train_loss"] for x in runs
              if x["method"] == "qlab_adam" and x["seed"] == 0 and x["lr"] == 1e-2]
    assert len(stored) == 1 and r["final_train_loss"] == pytest.approx(stored[0], rel=1e-4)
