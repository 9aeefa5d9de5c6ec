"""Re-making stored runs (bench/quality/remake.py): which runs, and what counts as a change."""
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
