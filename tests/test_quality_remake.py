"""Re-making stored runs (bench/quality/remake.py): which runs, and what counts as a change."""
import math

import pytest

pytest.importorskip("sklearn")
from bench.quality import remake  # noqa: E402
from bench.quality.choose import BAR  # noqa: E402
from bench.quality.interpolation import KINDS  # noqa: E402
from bench.quality.run import run_one  # noqa: E402
from qlab_fused.reference import resolve_rule  # noqa: E402

ADAM = resolve_rule("auto", KINDS["adam"])


def _runs():
    """Made-up stored runs of one task and seed: plain Adam at four lrs (1e-2 the grid's best; 10,
    past the grid, lower), the default QLAB-Adam at two α₀ and an ablation rule's run."""
    r = [dict(task="t", seed=0, method="adam", lr=lr, rule=None, final_train_loss=v)
         for lr, v in ((1e-3, 0.5), (1e-2, 0.2), (1e-1, 0.3), (10.0, 0.1))]
    r += [dict(task="t", seed=0, method="qlab_adam", lr=a0, rule=ADAM, final_train_loss=v)
          for a0, v in ((1e-2, 0.21), (1.0, 0.215))]
    r += [dict(task="t", seed=0, method="qlab_adam", lr=1e-2, rule="paper", final_train_loss=9.0)]
    return r


def test_jobs_remake_plain_x_at_its_best_grid_lr_and_the_defaults_runs():
    runs = _runs()
    plain = remake.jobs(runs, ["t"], [0], default=False)
    assert plain == [dict(task="t", seed=0, method="adam", lr=1e-2, rule=None)]  # not lr 10
    both = remake.jobs(runs, ["t"], [0], default=True)
    assert both[1:] == [dict(task="t", seed=0, method="qlab_adam", lr=a0, rule=ADAM)
                        for a0 in (1e-2, 1.0)]
    assert remake.jobs(runs, ["t"], [1], default=True) == []
    # the main suite stores the default's runs without a rule name: they count as the default's
    runs.append(dict(task="t", seed=1, method="qlab_adam", lr=1e-2, rule=None, tag="main",
                     final_train_loss=0.3))
    runs.append(dict(task="t", seed=1, method="qlab_adam", lr=1.0, rule=None, tag="other",
                     final_train_loss=0.3))
    assert remake.jobs(runs, ["t"], [1], default=True) == [
        dict(task="t", seed=1, method="qlab_adam", lr=1e-2, rule=ADAM)]
    job = dict(task="t", seed=1, method="qlab_adam", lr=1e-2, rule=ADAM)
    assert remake.stored(runs, job) == 0.3


def test_compare_counts_exact_runs_and_the_cells_a_remade_best_flips():
    runs = _runs()
    same = [dict(task="t", seed=0, method="adam", lr=1e-2, rule=None, final_train_loss=0.2)]
    c = remake.compare(runs, same)
    assert (c["runs"], c["exact"], c["worst"], c["flips"]) == (1, 1, 0.0, [])
    assert c["pairs"] == [(same[0], 0.2, 0.2)]
    # the re-made best 4 % lower: 0.215 / 0.192 = 1.12 > BAR, so the cell no longer holds
    lower = [dict(same[0], final_train_loss=0.192)]
    c = remake.compare(runs, lower)
    assert 0.215 / 0.192 > BAR >= 0.215 / 0.2
    assert c["exact"] == 0 and c["worst"] == pytest.approx(0.04) and c["flips"] == [("t", "adam")]
    assert c["where"] == ("t", "adam", 0, 1e-2)
    # a re-made default run counts with its own re-made loss
    both = lower + [dict(task="t", seed=0, method="qlab_adam", lr=1.0, rule=ADAM,
                         final_train_loss=0.2)]
    assert remake.compare(runs, both)["flips"] == []


def test_a_run_remade_here_is_the_run_made_here():
    job = dict(task="digits_mlp", seed=1, method="adam", lr=1e-3, rule=None)
    stored = [dict(run_one(job), rule=None)]
    c = remake.compare(stored, [run_one(job)])
    assert c["exact"] == 1 and c["worst"] == 0.0


def test_the_command_re_makes_each_base_at_its_best_lr_and_prints_the_counts(capsys):
    assert remake.main(["--task", "digits_mlp", "--seeds", "0", "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[:3]] == ["adam", "momentum", "sgd"]
    assert out[3].split(" re-made runs bit for bit;")[0].endswith(" of 3")


def test_perturb_multiplies_each_parameter_by_its_own_draw_and_eps_zero_is_the_run():
    import torch
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    remake.perturb(model, 1e-3, copy=7)
    g = torch.Generator().manual_seed(7)
    for p, b in zip(model.parameters(), before):
        z = torch.randn(b.shape, generator=g, dtype=torch.float64).float()
        assert torch.equal(p.detach(), b * (1 + 1e-3 * z))
    job = dict(task="digits_mlp", seed=0, method="sgd", lr=0.1, rule=None)
    ref = run_one(job)["final_train_loss"]
    (_, base, rel), = remake.spreads([job], eps=0.0, copies=1, workers=1)
    assert base == ref and rel == [1.0]
    (_, _, rel), = remake.spreads([job], eps=1e-6, copies=2, workers=1)
    assert all(r != 1.0 and abs(r - 1) < 1e-2 for r in rel) and rel[0] != rel[1]


def _main_runs():
    """Made-up main-suite runs of task "t", seeds 0 and 1: plain SGD at three grid lrs and one past
    the grid, plain Adam at one lr, QLAB-SGD's and QLAB-Adam's defaults (stored without a rule)."""
    r = []
    for seed in (0, 1):
        r += [dict(task="t", seed=seed, method="sgd", lr=lr, rule=None, tag="main",
                   final_train_loss=v) for lr, v in ((1e-2, 0.4), (1e-1, 0.2), (1.0, 0.3))]
        r.append(dict(task="t", seed=seed, method="sgd", lr=10.0, rule=None, tag="past_edge",
                      final_train_loss=0.1))
        r.append(dict(task="t", seed=seed, method="adam", lr=1e-3, rule=None, tag="main",
                      final_train_loss=0.5))
        r += [dict(task="t", seed=seed, method=m, lr=a0, rule=None, tag="main",
                   final_train_loss=v) for m, a0, v in
              (("qlab_sgd", 1e-2, 0.21), ("qlab_sgd", 1.0, 0.225), ("qlab_adam", 1.0, 0.5))]
    return r


def test_grid_jobs_are_every_grid_lr_of_plain_x_and_the_defaults_of_the_methods_given():
    runs = _main_runs()
    got = remake.grid_jobs(runs, ["t"], [1], ["sgd", "qlab_sgd"])
    assert got == ([dict(task="t", seed=1, method="sgd", lr=lr, rule=None)
                    for lr in (1e-2, 1e-1, 1.0)]  # not lr 10, past the grid
                   + [dict(task="t", seed=1, method="qlab_sgd", lr=a0, rule=remake.DEFAULTS[
                       "qlab_sgd"]) for a0 in (1e-2, 1.0)])
    every = remake.grid_jobs(runs, ["t"], [0, 1], list(remake.DEFAULTS) + ["sgd", "adam"])
    assert len(every) == 2 * (3 + 1 + 3)
    assert remake.grid_jobs(runs, ["u"], [0, 1], ["sgd"]) == []


def test_one_machine_puts_each_remade_run_in_its_stored_runs_place_read_as_the_default():
    runs = _main_runs()
    remade = [dict(task="t", seed=0, method="sgd", lr=1e-1, rule=None, final_train_loss=0.19),
              dict(task="t", seed=1, method="qlab_sgd", lr=1.0, rule=remake.DEFAULTS["qlab_sgd"],
                   final_train_loss=0.23)]
    mixed = remake.one_machine(runs, remade)
    assert len(mixed) == len(runs)
    changed = [(a, b) for a, b in zip(runs, mixed) if a is not b]
    assert [b["final_train_loss"] for _, b in changed] == [0.19, 0.23]
    assert changed[1][1]["rule"] is None and changed[1][0]["lr"] == 1.0


def test_standing_counts_runs_within_and_cells_as_the_headline_reads_them():
    runs = [r for r in _main_runs() if r["tag"] == "main"]
    s = remake.standing(runs, ["t"], [0, 1])
    # QLAB-SGD 0.21 / 0.2 and 0.225 / 0.2 = 1.125 > BAR at each seed; QLAB-Adam 0.5 / 0.5
    assert 0.225 / 0.2 > BAR >= 0.21 / 0.2
    assert s["sgd"] == dict(within=2, runs=4, cells=0)
    assert s["adam"] == dict(within=2, runs=2, cells=1)
    assert s["momentum"] == dict(within=0, runs=0, cells=0)
    assert s["worst"][("t", "sgd")] == pytest.approx(1.125)
    assert remake.standing(runs, ["t"], [2])["sgd"]["runs"] == 0


def test_remake_grid_writes_each_tasks_runs_and_read_prints_the_bar_from_them(tmp_path, capsys):
    stored = [dict(task="digits_mlp", seed=0, method="sgd", lr=lr, rule=None, tag="main",
                   final_train_loss=9.0) for lr in (1e-2, 1e-1)]
    remake.remake_grid(stored, ["digits_mlp"], [0], ["sgd"], workers=1, out=tmp_path)
    got = remake.load_remade(tmp_path)
    assert sorted(r["lr"] for r in got) == [1e-2, 1e-1]
    for r in got:
        assert r["final_train_loss"] == run_one(dict(task="digits_mlp", seed=0, method="sgd",
                                                     lr=r["lr"], rule=None))["final_train_loss"]
        assert r["machine"] == remake.machine() and r["torch"]
    # stored: the other lr's run the re-made one bit for bit and the best, the re-made best lr's
    # run 1 % above it; QLAB-SGD 1.05x the stored best: within of it, not of the re-made best
    loss = {r["lr"]: r["final_train_loss"] for r in got}
    lb, lo = sorted(loss, key=loss.get)
    assert loss[lo] > 1.1 * loss[lb]
    for r in stored:
        r["final_train_loss"] = 1.01 * loss[lo] if r["lr"] == lb else loss[lo]
    q = 1.05 * loss[lo]
    stored.append(dict(task="digits_mlp", seed=0, method="qlab_sgd", lr=1.0, rule=None,
                       tag="main", final_train_loss=q))
    assert remake.read(stored, tmp_path) == 0
    out = capsys.readouterr().out
    assert "2 runs re-made" in out and "1 bit for bit the stored ones" in out
    d = 1 - loss[lb] / (1.01 * loss[lo])  # above 0.1: loss[lo] > 1.1 loss[lb]
    assert (f"plain X: 2 runs, relative difference median {d:.1e}, 1 above 1 %, 1 above 10 %, "
            f"largest {d:.3g} ('digits_mlp', 0, 'sgd', {lb})") in out
    assert f"flips: digits_mlp sgd: worst 1.050x stored, {q / loss[lb]:.3f}x re-made" in out
    assert "best grid lr moved on 1 of 1 (task, base, seed): [('digits_mlp', 'sgd', 0)]" in out
    assert (f"worst of the selection, sgd: stored 1.050x (digits_mlp), re-made "
            f"{q / loss[lb]:.3f}x (digits_mlp)") in out
    assert remake.read(stored, tmp_path / "none") == 1
    assert remake.read(stored, tmp_path, seeds=[1]) == 1  # nothing re-made at seed 1
    assert remake.read(stored, tmp_path, seeds=[0]) == 0


def test_each_seed_set_is_written_to_its_own_file(tmp_path):
    assert remake.remade_path(tmp_path, "t", [2, 0, 1]) == tmp_path / "t.json"
    assert remake.remade_path(tmp_path, "t", [5, 3, 4]) == tmp_path / "t__seeds3-5.json"
    assert remake.remade_path(tmp_path, "t", [0]) == tmp_path / "t__seeds0.json"
    assert remake.remade_path(tmp_path, "t", [0, 2]) == tmp_path / "t__seeds0,2.json"
    assert remake.remade_path(tmp_path, "t", [0, 1]) == tmp_path / "t__seeds0-1.json"


def test_bar_runs_are_the_runs_the_six_seed_counts_read():
    sgd = remake.DEFAULTS["qlab_sgd"]
    runs = [dict(task="t", seed=3, method="sgd", lr=1e-1, rule=None, tag=tag, final_train_loss=v)
            for tag, v in (("a", 0.3), ("b", 0.2))]
    runs += [dict(task="t", seed=3, method="sgd", lr=10.0, rule=None, tag="past_edge",
                  final_train_loss=0.01),  # past the grid: not the bar's
             dict(task="t", seed=3, method="qlab_sgd", lr=1e-2, rule=None, tag="main",
                  final_train_loss=0.9),
             dict(task="t", seed=3, method="qlab_sgd", lr=1e-2, rule=sgd, tag="x",
                  final_train_loss=0.25),  # named: read before the main suite's unnamed run
             dict(task="t", seed=3, method="qlab_sgd", lr=1.0, rule=sgd, tag="y",
                  final_train_loss=0.21),
             dict(task="t", seed=3, method="qlab_sgd", lr=1.0, rule=None, tag="other",
                  final_train_loss=5.0),  # unnamed outside the main suite: not the default's
             dict(task="t", seed=3, method="qlab_sgd", lr=1e-1, rule="paper", tag="x",
                  final_train_loss=5.0),
             dict(task="t", seed=6, method="sgd", lr=1e-1, rule=None, tag="c",
                  final_train_loss=0.1)]  # not a choice seed
    bar = remake.bar_runs(runs)
    got = sorted((r["method"], r["lr"], r["rule"], r["final_train_loss"]) for r in bar)
    assert got == [("qlab_sgd", 1e-2, None, 0.25), ("qlab_sgd", 1.0, None, 0.21),
                   ("sgd", 1e-1, None, 0.2)]
    s = remake.standing(bar, ["t"], [3])
    assert s["sgd"] == dict(within=1, runs=2, cells=0)  # 0.21 / 0.2 within, 0.25 / 0.2 not
    assert remake.bar_runs(runs, seeds=(6,)) == [runs[-1]]


def test_perturbed_copies_of_the_defaults_runs_at_the_alpha0_asked(monkeypatch, capsys):
    made = []

    def fake_spreads(todo, eps, copies, workers):
        made.extend(todo)
        return [(j, 1.0, [1.0, 1.5 if j["rule"] else 1.2]) for j in todo]
    monkeypatch.setattr(remake, "load", lambda: [dict(r, tag="x") for r in _runs()])
    monkeypatch.setattr(remake, "spreads", fake_spreads)
    assert remake.main(["--task", "t", "--perturb", "1e-6", "--default", "--alpha0", "1"]) == 0
    assert [(j["method"], j["lr"]) for j in made] == [("adam", 1e-2), ("qlab_adam", 1.0)]
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("plain X: 1 runs, spread (largest copy over smallest) median 1.2x")
    assert out[-1].startswith("QLAB-X's default: 1 runs, spread (largest copy over smallest) "
                              "median 1.5x, widest 1.500x ('t', 'qlab_adam', 0, 1.0)")
    # the defaults' runs themselves are re-made from perturbed parameters, not only plain X's
    job = dict(task="digits_mlp", seed=0, method="qlab_sgd", lr=1e-2,
               rule=remake.DEFAULTS["qlab_sgd"])
    monkeypatch.undo()
    (_, base, rel), = remake.spreads([job], eps=1e-6, copies=1, workers=1)
    assert math.isfinite(base) and rel[0] != 1.0 and abs(rel[0] - 1) < 0.1
