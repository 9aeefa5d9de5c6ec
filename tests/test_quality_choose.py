"""The choice of defaults as code (bench/quality/choose.py) and the loss floor (bench/quality/tasks.py)
on made-up runs: what makes a candidate eligible, and how ties are broken."""
import math

import pytest

pytest.importorskip("sklearn")  # bench.quality.tasks builds its data with it

from bench.quality import choose as ch  # noqa: E402
from bench.quality.run import GRID  # noqa: E402
from bench.quality.tasks import BELOW_FLOOR, FLOOR, HELD_OUT, SELECTION, TASKS, floor_breaches  # noqa: E402
from qlab_fused.reference import resolve_rule  # noqa: E402
from qlab_fused.contract import KIND_SGD  # noqa: E402

SEEDS = ch.CHOICE_SEEDS
TASKS2 = ("task_a", ch.CONVEX)
INCUMBENT = resolve_rule("auto", KIND_SGD)


def _plain(loss=1.0):
    return [dict(task=t, method="sgd", lr=lr, seed=s, final_train_loss=loss * (1 + abs(math.log10(lr))),
                 tag="main") for t in TASKS2 for lr in GRID for s in SEEDS]


def _qlab(rule, ratio, tag="ablation", rise=0.0, skip=None, worst=None):
    """QLAB runs of ``rule`` at ``ratio`` × the best plain loss (1.0); ``worst`` = (task, α₀, seed,
    ratio) for one run."""
    out = []
    for t in TASKS2:
        for lr in GRID:
            for s in SEEDS:
                if skip == (t, lr, s):
                    continue
                r = worst[3] if worst and worst[:3] == (t, lr, s) else ratio
                run = dict(task=t, method="qlab_sgd", lr=lr, seed=s, rule=rule, final_train_loss=r, tag=tag)
                if t == ch.CONVEX:
                    run["max_rel_increase"] = rise
                out.append(run)
    return out


def _checked(c, lost=0, rebound=1.0, spikes=0, allowed=0):
    """Made-up interpolation checks: runs lost, largest rebound, spikes, the incumbent's spikes."""
    c.lost, c.rebound, c.spikes, c.allowed = lost, rebound, spikes, allowed


def _pick(runs, rules, lost=None):
    cands = ch.gather(runs, "sgd", rules, tasks=TASKS2)
    for c in cands:
        _checked(c, lost=(lost or {}).get(c.rule, 0))
    return cands, ch.choose(cands, INCUMBENT)


def test_ratios_worst_and_counts():
    runs = _plain() + _qlab("r1", 1.05, worst=("task_a", 1e-2, 1, 1.5))
    (c,), _ = _pick(runs, ["r1"])
    assert c.ratios[("task_a", 1e-2, 1)] == pytest.approx(1.5)
    assert c.worst == (pytest.approx(1.5), "task_a")
    assert c.within == 2 * len(GRID) * len(SEEDS) - 1
    assert c.cells == 1  # task_a misses once; the convex task holds
    assert not c.missing


def test_smallest_worst_case_wins():
    runs = _plain() + _qlab("r1", 1.0, worst=("task_a", 1.0, 0, 1.5)) + _qlab("r2", 1.2)
    _, pick = _pick(runs, ["r1", "r2"])
    assert pick.rule == "r2"


def test_tied_worst_cases_go_to_most_runs_within():
    runs = (_plain() + _qlab("r1", 1.0, worst=("task_a", 1.0, 0, 1.3))  # 29 within, worst 1.30
            + _qlab("r2", 1.25))                                       # 0 within, worst 1.25 (ties)
    _, pick = _pick(runs, ["r1", "r2"])
    assert pick.rule == "r1"


def test_full_ties_go_to_the_incumbent_whose_runs_may_come_from_the_main_suite():
    runs = _plain() + _qlab("r1", 1.0) + _qlab(None, 1.0, tag="main")
    cands, pick = _pick(runs, ["r1", INCUMBENT])
    assert all(not c.missing for c in cands)
    assert pick.rule == INCUMBENT
    # a default-rule run outside the main suite (another round's default) does not count
    cands, _ = _pick(_plain() + _qlab(None, 1.0, tag="seeds345_main"), [INCUMBENT])
    assert cands[0].missing == list(TASKS2)


def test_full_ties_on_the_bar_go_to_fewer_spikes_by_more_than_spike_tie():
    runs = _plain() + _qlab("r1", 1.0) + _qlab(None, 1.0, tag="main")
    cands = ch.gather(runs, "sgd", ["r1", INCUMBENT], tasks=TASKS2)
    for sp_new, sp_inc, want in [(1, 1 + ch.SPIKE_TIE + 1, "r1"),          # far calmer: it wins
                                 (1, 1 + ch.SPIKE_TIE, INCUMBENT)]:         # within SPIKE_TIE: a tie
        for c in cands:
            _checked(c, spikes=sp_new if c.rule == "r1" else sp_inc, allowed=sp_inc)
        assert ch.choose(cands, INCUMBENT).rule == want
    # the spikes break ties only: a calmer rule with fewer runs within does not win
    runs = _plain() + _qlab("r1", 1.0, worst=("task_a", 1.0, 0, 1.15)) + _qlab(None, 1.0, tag="main")
    cands = ch.gather(runs, "sgd", ["r1", INCUMBENT], tasks=TASKS2)
    for c in cands:
        _checked(c, spikes=0 if c.rule == "r1" else 9, allowed=9)
    assert ch.choose(cands, INCUMBENT).rule == INCUMBENT


def test_a_rule_that_spikes_more_often_than_the_incumbent_is_out_however_good():
    """Since round 22: more runs rebounding above REBOUND_MAX than the incumbent's, none stored, or
    the incumbent's not stored, make a candidate ineligible, even one that ends every check's run
    below the lost-run threshold (rounds 15–21: any such run)."""
    runs = _plain() + _qlab("good", 1.0) + _qlab(None, 1.15, tag="main")
    cands = ch.gather(runs, "sgd", ["good", INCUMBENT], tasks=TASKS2)
    good = next(c for c in cands if c.rule == "good")
    for c in cands:
        _checked(c, rebound=6000.0 if c is good else 400.0, spikes=4 if c is good else 3, allowed=3)
    assert "4 runs rebound above 100x" in good.why_not() and "incumbent's 3" in good.why_not()
    assert not next(c for c in cands if c.rule == INCUMBENT).why_not()  # at its own count
    assert ch.choose(cands, INCUMBENT).rule == INCUMBENT
    good.spikes = 3  # as often as the incumbent, however large: eligible, and it wins on the bar
    assert ch.choose(cands, INCUMBENT).rule == "good"
    good.allowed = None
    assert "incumbent's interpolation checks are not stored" in good.why_not()
    good.allowed, good.spikes = 3, None
    assert "without rebounds" in good.why_not() and ch.choose(cands, INCUMBENT).rule == INCUMBENT


def test_rebounds_and_spikes_are_read_over_both_budgets_and_every_seed_set(tmp_path, monkeypatch):
    import json
    from bench.quality import interpolation
    monkeypatch.setattr(interpolation, "OUT", tmp_path)
    sets = (None,) + ch.GATE_TAGS
    for e, rbs in zip(ch.INTERPOLATION_EPOCHS, ([1.0, 7.0], [3.0, 200.0])):
        for k, tag in enumerate(sets):
            runs = [dict(rebound=x * (k + 1)) for x in rbs]  # tagged sets spike more
            interpolation.path_for("sgd", "r1", e, tag).write_text(json.dumps(dict(lost=k, runs=runs)))
            interpolation.path_for("sgd", "r2", e, tag).write_text(json.dumps(dict(lost=0, runs=[{}])))
            inc = [dict(rebound=150.0)] if tag else [dict(rebound=1.0)]
            inc_path = interpolation.path_for("sgd", INCUMBENT, e, tag)
            inc_path.write_text(json.dumps(dict(lost=0, runs=inc)))
    cands = [ch.Candidate("r1"), ch.Candidate("r2")]
    ch.read_interpolation("sgd", cands, incumbent=INCUMBENT)
    n = len(sets)
    # r1: 200·(k + 1) at 30 epochs on every set, 7·(k + 1) ≤ 21 never past 100; lost summed over files
    assert cands[0].lost == 2 * sum(range(n)) and cands[0].rebound == 200.0 * n
    assert cands[0].spikes == n and cands[0].allowed == 2 * len(ch.GATE_TAGS)
    assert (cands[1].lost, cands[1].rebound, cands[1].spikes) == (0, None, None)
    # a seed set missing: the check counts as not stored
    interpolation.path_for("sgd", "r1", 30, ch.GATE_TAGS[-1]).unlink()
    ch.read_interpolation("sgd", cands[:1], incumbent=INCUMBENT)
    assert cands[0].lost is None and "not stored" in cands[0].why_not()


@pytest.mark.parametrize("what", ["missing", "rise", "lost", "unchecked"])
def test_ineligible_candidates_are_out_however_good(what):
    bad = _qlab("bad", 0.5, rise=1e-3 if what == "rise" else 0.0,
                skip=("task_a", 1e-4, 2) if what == "missing" else None)
    runs = _plain() + bad + _qlab("ok", 1.4)
    cands = ch.gather(runs, "sgd", ["bad", "ok"], tasks=TASKS2)
    for c in cands:
        _checked(c, lost={"lost": 3, "unchecked": None}.get(what, 0) if c.rule == "bad" else 0)
    bad_c = next(c for c in cands if c.rule == "bad")
    assert bad_c.why_not()
    assert ch.choose(cands, INCUMBENT).rule == "ok"
    for c in cands:
        c.lost = 2
    assert ch.choose(cands, INCUMBENT) is None


def test_rounding_sized_convex_rises_pass():
    runs = _plain() + _qlab("r1", 1.0, rise=6e-9)
    cands, pick = _pick(runs, ["r1"])
    assert pick.rule == "r1"


def test_floor_and_task_lists():
    assert not set(SELECTION) & (set(HELD_OUT) | set(BELOW_FLOOR))
    assert set(SELECTION) | set(HELD_OUT) | set(BELOW_FLOOR) == set(TASKS)
    runs = [dict(task="a", final_train_loss=FLOOR * 0.9), dict(task="a", final_train_loss=FLOOR * 0.5),
            dict(task="b", final_train_loss=FLOOR * 1.1), dict(task="c", final_train_loss=None),
            dict(task="d", final_train_loss=math.nan)]
    assert floor_breaches(runs) == {"a": FLOOR * 0.5}


def test_stored_main_runs_respect_the_floor_lists():
    """The stored main suite (seeds 0–2) against the lists: no selection task breaches the floor,
    every task listed below it does (round 16 found a held-out task breaching it as it was to join)."""
    import json
    from bench.quality.run import RESULTS
    breached = {}
    for task in TASKS:
        path = RESULTS / f"{task}__main.json"
        if path.exists():
            breached.update(floor_breaches(json.loads(path.read_text())["runs"]))
    assert not set(breached) & set(SELECTION), breached
    assert set(BELOW_FLOOR) <= set(breached)
    assert all((RESULTS / f"{t}__main.json").exists() for t in SELECTION)


def test_interpolation_checks_are_read_for_every_budget(tmp_path, monkeypatch):
    import json
    from bench.quality import interpolation
    monkeypatch.setattr(interpolation, "OUT", tmp_path)
    cands = [ch.Candidate("r1"), ch.Candidate("r2")]
    for e, lost in zip(ch.INTERPOLATION_EPOCHS, (0, 2)):
        for tag in (None,) + ch.GATE_TAGS:
            r1 = dict(lost=lost if tag is None else 0)
            interpolation.path_for("sgd", "r1", e, tag).write_text(json.dumps(r1))
            interpolation.path_for("sgd", "r2", e, tag).write_text(json.dumps(dict(lost=0)))
    interpolation.path_for("sgd", "r2", ch.INTERPOLATION_EPOCHS[1]).unlink()  # one budget missing
    ch.read_interpolation("sgd", cands)
    assert [c.lost for c in cands] == [2, None]
    assert "loses 2" in cands[0].why_not() and "not stored" in cands[1].why_not()


def test_interpolation_checks_on_other_seeds_are_stored_apart_from_the_choice_s(tmp_path, monkeypatch):
    """A check on seeds the choice does not read must not replace the file it does read."""
    import json
    from bench.quality import interpolation
    monkeypatch.setattr(interpolation, "OUT", tmp_path)
    with pytest.raises(SystemExit):
        interpolation.main(["--base", "sgd", "--seeds", "6", "--epochs", "1", "--alpha0", "1e-2"])
    assert not list(tmp_path.iterdir())
    interpolation.main(["--base", "sgd", "--seeds", "6", "--epochs", "1", "--alpha0", "1e-2",
                        "--tag", "fresh"])
    rule = resolve_rule("auto", KIND_SGD)
    stored = json.loads(interpolation.path_for("sgd", rule, 1, "fresh").read_text())
    assert [r["seed"] for r in stored["runs"]] == [6] and len(stored["runs"][0]["losses"]) == 1
    assert not interpolation.path_for("sgd", rule, 1).exists()
    cands = [ch.Candidate(rule)]
    ch.read_interpolation("sgd", cands, epochs=(1,))   # the tagged check is not the choice's
    assert cands[0].lost is None


def test_more_seeds_need_runs_on_every_seed():
    runs = _plain() + _qlab("r1", 1.0)
    (c,) = ch.gather(runs, "sgd", ["r1"], tasks=TASKS2, seeds=SEEDS + (7,))
    assert c.missing == list(TASKS2)  # seed 7 has no runs
    (c,) = ch.gather(runs, "sgd", ["r1"], tasks=TASKS2, seeds=SEEDS[:1])
    assert not c.missing and len(c.ratios) == len(TASKS2) * len(GRID)


def test_the_choice_reads_six_seeds_by_default(monkeypatch, capsys):
    runs = _plain() + _qlab("r1", 1.0) + _qlab("r2", 1.05)
    runs = [r for r in runs if r.get("rule") != "r1" or r["seed"] < 3]  # r1 has no fresh-seed runs
    monkeypatch.setattr(ch, "load", lambda: runs)
    monkeypatch.setattr(ch, "SELECTION", TASKS2)
    monkeypatch.setattr(ch, "read_interpolation",
                        lambda base, cands, incumbent: [_checked(c) for c in cands])
    monkeypatch.setattr(ch, "claims_pass", lambda base, rule: True)  # made-up rules: no claims to run
    ch.main(["--base", "sgd", "--candidates", "r1,r2"])
    out = capsys.readouterr().out
    assert "6 seeds" in out and "missing runs on task_a" in out and out.strip().endswith("=> r2")
    ch.main(["--base", "sgd", "--candidates", "r1,r2", "--seeds", "0,1,2"])
    assert capsys.readouterr().out.strip().endswith("=> r1")


def test_rebound_is_the_largest_rise_over_the_lowest_loss_so_far():
    from bench.quality.interpolation import rebound
    assert rebound([2.0, 0.5, 0.05]) == 0.0  # never below 0.01
    assert rebound([2.0, 0.005, 0.004, 0.003]) == 1.0
    assert rebound([2.0, 0.5, 0.002, 0.02, 0.001, 0.05, 0.0011]) == pytest.approx(50.0)
    assert rebound([2.0, 0.009, 0.2]) == pytest.approx(0.2 / 0.009)


def test_the_check_runs_torchs_optimizer_under_its_own_name_with_plain(tmp_path, monkeypatch):
    """`--plain LR`: torch's optimizer at that lr (a reference for the rebounds), stored as rule
    'plain_lr<LR>', which no candidate is named."""
    import json
    import torch
    from bench.quality import interpolation
    from qlab_fused import demo
    monkeypatch.setattr(interpolation, "OUT", tmp_path)
    made = []
    real = interpolation.make_plain
    monkeypatch.setattr(interpolation, "make_plain", lambda b, lr: made.append((b, lr)) or real(b, lr))
    monkeypatch.setattr(demo, "load_digits", lambda seed: (torch.randn(128, 64), torch.randint(0, 10, (128,)),
                                                          torch.randn(32, 64), torch.randint(0, 10, (32,))))
    interpolation.main(["--base", "adam", "--plain", "1e-3", "--seeds", "0", "--epochs", "1"])
    assert made == [("adam", 1e-3)]
    assert isinstance(real("adam", 1e-3)([torch.zeros(1, requires_grad=True)]), torch.optim.Adam)
    stored = json.loads(interpolation.path_for("adam", "plain_lr0.001", 1).read_text())
    assert stored["rule"] == "plain_lr0.001" and len(stored["runs"]) == 1
    assert len(stored["runs"][0]["losses"]) == 1 and math.isfinite(stored["runs"][0]["final"])


def test_claims_run_with_the_candidate_as_the_default_and_put_it_back():
    """Since round 18 a candidate must pass CI's pinned claims for its base as that base's default:
    the claim tests see the candidate through rule="auto", and the library's default is restored."""
    from qlab_fused import reference
    from qlab_fused.contract import KIND_MOMENTUM
    before = dict(reference.DEFAULT_RULES)
    seen = []

    def run(args):
        seen.append((reference.resolve_rule("auto", KIND_MOMENTUM), args[-1]))
        return 1 if seen[-1][0] == "bad" else 0

    assert ch.claims_pass("momentum", "good", run=run) is True
    assert ch.claims_pass("momentum", "bad", run=run) is False
    assert seen == [("good", "test_qlab_momentum_"), ("bad", "test_qlab_momentum_")]
    assert reference.DEFAULT_RULES == before
    assert ch.CLAIMS.exists()


def test_a_candidate_failing_the_claims_is_out():
    runs = _plain() + _qlab("r1", 1.0) + _qlab("r2", 1.0)
    cands, _ = _pick(runs, ["r1", "r2"])
    cands[0].claims = False
    assert "claims" in cands[0].why_not() and not cands[1].why_not()
    assert ch.choose(cands, INCUMBENT).rule == "r2"


def test_the_bar_reads_the_grid_and_past_edge_reads_past_it():
    """A plain SGD run at lr 10 (the `past_edge` suite's) halves task_a's best loss: the bar's best
    grid lr ignores it; against it the default's 1.05× runs on task_a become 2.1×."""
    from bench.quality import past_edge
    from bench.quality.analyze import best_plain
    edge = [dict(task="task_a", method="sgd", lr=10.0, seed=s, final_train_loss=0.5,
                 tag="past_edge") for s in SEEDS]
    runs = _plain() + edge + _qlab(INCUMBENT, 1.05)
    assert best_plain(runs)[("task_a", "sgd", 0)] == (1.0, 1.0)
    assert best_plain(runs, grid=None)[("task_a", "sgd", 0)] == (0.5, 10.0)
    assert best_plain(runs, grid=None)[(ch.CONVEX, "sgd", 0)] == (1.0, 1.0)
    (bar,) = ch.gather(runs, "sgd", [INCUMBENT], tasks=TASKS2)
    (past,) = ch.gather(runs, "sgd", [INCUMBENT], tasks=TASKS2, grid=None)
    n = len(GRID) * len(SEEDS)
    assert (bar.within, bar.cells) == (2 * n, 2) and (past.within, past.cells) == (n, 1)
    assert past.worst == (pytest.approx(2.1), "task_a")
    (row,) = past_edge.rows(runs, tasks=TASKS2, seeds=SEEDS)
    assert row[:5] == ("task_a", "sgd", len(SEEDS), len(SEEDS), [10.0])
    assert row[5:] == (pytest.approx(2.0), pytest.approx(1.05), pytest.approx(2.1), False)
    (line,) = past_edge.summary(runs, tasks=TASKS2, seeds=SEEDS)
    assert f"{2 * n} of {2 * n} runs within" in line and f"past the edge {n} of {2 * n}" in line
    assert len(past_edge.table(runs, tasks=TASKS2, seeds=SEEDS)) == 3


def test_made_with_reads_a_run_naming_its_rule_before_the_main_suite_s_and_the_first_of_several():
    from bench.quality.analyze import made_with
    q = dict(task="task_a", method="qlab_sgd", lr=1e-2, seed=0)
    runs = [dict(q, rule=None, tag="main", final_train_loss=1.0),            # the default's
            dict(q, rule=INCUMBENT, tag="ablation", final_train_loss=2.0),   # names it: read
            dict(q, rule=INCUMBENT, tag="seeds345", final_train_loss=3.0),   # loaded later
            dict(q, rule=None, tag="seeds345_main", final_train_loss=4.0),   # no rule known
            dict(q, method="sgd", rule=None, tag="main", final_train_loss=5.0),
            dict(q, seed=1, rule=None, tag="main", final_train_loss=6.0)]    # only the main's
    got = made_with(runs, {"qlab_sgd": INCUMBENT})
    key = ("qlab_sgd", INCUMBENT, "task_a", 1e-2)
    assert {k: r["final_train_loss"] for k, r in got.items()} == {key + (0,): 2.0, key + (1,): 6.0}
    # gather reads the same runs, so its ratio at seed 0 is the named run's
    (c,) = ch.gather(_plain() + runs, "sgd", [INCUMBENT], tasks=TASKS2)
    assert c.ratios[("task_a", 1e-2, 0)] == pytest.approx(2.0 / 1.0)
    assert c.ratios[("task_a", 1e-2, 1)] == pytest.approx(6.0 / 1.0)
