"""bench/quality/zero_loss.py: the diagnostics of docs/quality.md log item 38."""
import pytest

pytest.importorskip("sklearn")  # bench.quality.tasks builds its data with it


def test_zero_loss_trace_reads_the_rule_and_puts_it_back(monkeypatch):
    """bench/quality/zero_loss.py trace: per epoch α and α·⟨V,G⟩/L0 of the check's run, read through a
    wrapper of the device rule that is removed afterwards; with `_polyak` the step never passes 2×."""
    import torch
    from bench.quality import zero_loss
    from qlab_fused import demo, rules
    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(demo, "load_digits", lambda seed: (torch.randn(256, 64, generator=g),
                                                          torch.randint(0, 10, (256,), generator=g),
                                                          torch.randn(32, 64), torch.randint(0, 10, (32,))))
    real = rules.rule_step
    rows = zero_loss.trace("momentum", "alternate_wgeo_ema_rel_near_polyak", 0.1, 0, 2)
    assert rules.rule_step is real and [r["epoch"] for r in rows] == [1, 2]
    assert all(0 < r["alpha_median"] <= r["alpha_max"] for r in rows)
    assert all(r["polyak_max"] <= 2.0 * (1 + 1e-5) for r in rows)


def test_zero_loss_unseen_share_is_a_fraction_and_large_where_embeddings_sit_out():
    from bench.quality import zero_loss
    mlp = zero_loss.unseen("digits_mlp", 1e-2)
    assert mlp and all(0.0 <= s <= 1.0 for s in mlp)
    ratings = zero_loss.unseen("ratings_mf", 1e-2, every=100)
    assert min(ratings) > 0.4 > max(mlp)  # most user/item rows sit out each batch of 128
