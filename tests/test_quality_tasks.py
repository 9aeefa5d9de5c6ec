"""The quality protocol's tasks build, and their losses are what their docstrings say."""
import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("sklearn")
from bench.quality import tasks  # noqa: E402


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_builds_and_its_first_batch_has_a_positive_finite_loss(name):
    t = tasks.TASKS[name](0)
    x, y = next(iter(t.batches()))
    loss = float(t.loss(t.model, x, y).detach())
    assert math.isfinite(loss) and loss > 0
    assert math.isfinite(t.train_loss(t.model)) and t.steps > 0


def test_pinball_loss_weighs_under_and_over_prediction_by_tau():
    """friedman_quantile: residual r = y − f; loss τ·r where r > 0, (τ − 1)·r where r < 0."""
    model = lambda x: x  # noqa: E731  (the "prediction" is x itself)
    x = torch.tensor([[0.0], [2.0]])
    y = torch.tensor([[1.0], [1.0]])  # one under-prediction by 1, one over-prediction by 1
    want = (tasks.TAU * 1 + (1 - tasks.TAU) * 1) / 2
    assert float(tasks._pinball(model, x, y)) == pytest.approx(want)
    assert tasks._eval_pinball(model, x, y) == pytest.approx(want)


def test_a_constant_at_the_training_targets_tau_quantile_minimises_the_pinball_loss():
    _, ytr, _, _ = tasks._friedman()
    q = torch.quantile(ytr, tasks.TAU)
    at = lambda c: tasks._eval_pinball(lambda X: torch.full_like(ytr, c), ytr, ytr)  # noqa: E731
    assert at(float(q)) < min(at(float(q) - 0.1), at(float(q) + 0.1))


def test_digits_lstm_reads_eight_rows_of_eight_pixels():
    t = tasks.digits_lstm(0)
    x, _ = next(iter(t.batches()))
    assert x.shape[1] == 64 and t.model(x).shape == (x.shape[0], 10)
    assert t.model.rnn.input_size == 8


def test_topics_bag_batches_touch_a_minority_of_the_embedding_rows():
    """topics_bag is the sparse-embedding task: the gradient of one batch is zero on most rows."""
    t = tasks.topics_bag(0)
    x, y = next(iter(t.batches()))
    t.loss(t.model, x, y).backward()
    touched = (t.model.bag.weight.grad.abs().sum(1) > 0).float().mean()
    assert 0.05 < float(touched) < 0.5
    assert t.steps == 2 * (20000 // 64)


def test_topics_bag_is_learnable_and_its_label_noise_caps_the_accuracy():
    """Naive Bayes on the token counts predicts the test topics well above chance (1/8) and, with
    15 % of the labels random, below the ceiling 0.85 + 0.15/8: the noise keeps every method's
    loss far above the floor."""
    Xtr, ytr, Xte, yte = tasks._topic_documents()
    assert Xtr.shape == (20000, 24) and Xte.shape == (4000, 24)
    counts = torch.stack([torch.bincount(Xtr[ytr == k].flatten(), minlength=3000) for k in range(8)])
    logp = (counts.double() + 0.5).log() - (counts.double() + 0.5).sum(1, keepdim=True).log()
    pred = logp[:, Xte].sum(-1).argmax(0)
    acc = float((pred == yte).double().mean())
    assert 0.6 < acc < 0.85 + 0.15 / 8


def test_char_lstm_is_the_gru_task_with_an_lstm_cell():
    t, g = tasks.char_lstm(0), tasks.char_gru(0)
    assert isinstance(t.model.rnn, torch.nn.LSTM) and t.steps == g.steps
    xt, yt = next(iter(t.batches()))
    xg, yg = next(iter(g.batches()))
    assert torch.equal(xt, xg) and torch.equal(yt, yg)


def test_char_lstm_3x_is_char_lstm_at_three_times_its_steps():
    t, s = tasks.char_lstm_3x(0), tasks.char_lstm(0)
    assert isinstance(t.model.rnn, torch.nn.LSTM) and t.steps == 3 * s.steps
    xt, yt = next(iter(t.batches()))
    xs, ys = next(iter(s.batches()))
    assert torch.equal(xt, xs) and torch.equal(yt, ys)


def test_sine_field_targets_carry_noise_of_variance_009_over_a_unit_variance_field():
    """The field is standardised and its noise σ 0.3: a least-squares fit on the field's own twelve
    sinusoids (the true features) leaves about 0.09, which keeps every method above the floor."""
    import numpy as np
    Xtr, ytr, Xte, yte = tasks._noisy_field()
    assert Xtr.shape == (4000, 2) and Xte.shape == (1000, 2) and float(Xtr.abs().max()) <= 1
    assert 0.9 < float(ytr.var()) < 1.2
    rng = np.random.default_rng(2031)
    rng.uniform(-1, 1, size=(5000, 2))
    W, b = rng.normal(0, 3.0, size=(2, 12)), rng.uniform(0, 2 * np.pi, 12)
    F_ = torch.tensor(np.sin(Xtr.double().numpy() @ W + b))
    F_ = torch.cat([F_, torch.ones(len(F_), 1, dtype=F_.dtype)], 1)
    coef = torch.linalg.lstsq(F_, ytr.double()).solution
    assert 0.08 < float(((F_ @ coef - ytr.double()) ** 2).mean()) < 0.10


def test_sine_field_model_uses_sine_activations():
    t = tasks.sine_field(0)
    x = torch.tensor([[0.25]])
    assert [m.omega for m in t.model if isinstance(m, tasks._Sine)] == [3.0, 1.0]
    assert float(tasks._Sine(3.0)(x)) == pytest.approx(math.sin(0.75))
    assert t.steps == 4 * (4000 // 64)


def test_digits_deep_tanh_has_six_hidden_tanh_layers_and_no_normalisation():
    t = tasks.digits_deep_tanh(0)
    kinds = [type(m) for m in t.model]
    assert kinds.count(torch.nn.Tanh) == 6 and kinds.count(torch.nn.Linear) == 7
    assert set(kinds) == {torch.nn.Linear, torch.nn.Tanh} and t.steps == 222


def test_digits_moe_output_is_the_gate_weighted_sum_of_its_experts():
    t = tasks.digits_moe(0)
    x = tasks._digits()[0][:5]
    m = t.model
    weights = torch.softmax(m.gate(x), -1)
    expected = sum(weights[:, k:k + 1] * m.experts[k](x) for k in range(len(m.experts)))
    assert len(m.experts) == 4 and torch.allclose(m(x), expected, atol=1e-6)
    assert t.steps == 222


def test_deep_linear_is_a_product_of_four_matrices_through_a_rank_8_bottleneck():
    """No activation and no bias: the network is the linear map W4·W3·W2·W1 of rank ≤ 8, and the
    best rank-8 map leaves 0.157 on the training set (the floor its runs stay above)."""
    t = tasks.deep_linear(0)
    Xtr, ytr, _, _ = tasks._linear_map_data()
    mats = [m.weight.double() for m in t.model]
    assert [tuple(w.shape) for w in mats] == [(16, 32), (8, 16), (16, 8), (16, 16)]
    assert all(m.bias is None for m in t.model)
    product = mats[3] @ mats[2] @ mats[1] @ mats[0]
    assert torch.allclose(t.model(Xtr[:7]).double(), Xtr[:7].double() @ product.T, atol=1e-5)
    assert int(torch.linalg.matrix_rank(product)) <= 8
    P = Xtr.double() @ torch.linalg.lstsq(Xtr.double(), ytr.double()).solution
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    rank8 = U[:, :8] @ torch.diag(S[:8]) @ Vh[:8]
    assert 0.15 < float(((rank8 - ytr.double()) ** 2).mean()) < 0.165
    assert t.steps == 124


def test_clicks_fm_is_a_factorization_machine_over_one_table_of_field_levels():
    """The output is bias + Σ level weights + Σ_{i<j} ⟨v_i, v_j⟩ over the six fields, and a batch
    touches few of the 1400 rows (the sparse-row kind the held-out task stands for)."""
    t = tasks.clicks_fm(0)
    Xtr, ytr, Xte, yte = tasks._click_fields()
    assert Xtr.shape == (20000, 6) and Xte.shape == (4000, 6) and int(Xtr.max()) == 1399
    m, idx = t.model, Xtr[:5]
    v = m.vectors(idx)
    pairs = sum((v[:, i] * v[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    expected = m.bias + m.weight(idx).squeeze(-1).sum(1) + pairs
    assert torch.allclose(m(idx), expected, atol=1e-5)
    x, _ = next(iter(t.batches()))
    assert len(set(x.flatten().tolist())) < 400 and t.steps == 312


def test_digits_contrastive_loss_is_symmetric_info_nce_over_the_batch():
    t = tasks.digits_contrastive(0)
    x, y = next(iter(t.batches()))
    assert x.shape == (64, 2, 64) and t.steps == 216
    z1 = torch.nn.functional.normalize(t.model(x[:, 0]).double(), dim=-1)
    z2 = torch.nn.functional.normalize(t.model(x[:, 1]).double(), dim=-1)
    logits = z1 @ z2.T / 0.2
    expected = -0.5 * (torch.log_softmax(logits, 1).diag().mean()
                       + torch.log_softmax(logits, 0).diag().mean())
    expected = float(expected.detach())
    assert abs(float(t.loss(t.model, x, y).detach()) - expected) < 1e-5
    # every row's loss depends on the other rows of its batch
    assert abs(float(t.loss(t.model, x[:32], y[:32]).detach()) - expected) > 1e-3


def test_digits_contrastive_views_are_two_different_corruptions_of_each_digit():
    Xtr, _, Xte, _ = tasks._digit_views()
    raw = tasks._digits()[0]
    assert Xtr.shape == (len(raw), 2, 64) and Xte.shape[1:] == (2, 64)
    assert (Xtr[:, 0] - Xtr[:, 1]).abs().mean() > 0.05
    # a view is closer to its own digit than to another digit, on average
    own = (Xtr[:, 0] - raw).pow(2).sum(1).mean()
    other = (Xtr[:, 0] - raw.roll(1, 0)).pow(2).sum(1).mean()
    assert own < 0.85 * other


def test_digits_contrastive_training_loss_is_the_mean_over_consecutive_batches():
    t = tasks.digits_contrastive(0)
    X = tasks._digit_views()[0]
    chunks = [float(tasks._info_nce(t.model, X[i:i + 64]).detach()) for i in range(0, len(X) - 63, 64)]
    assert len(chunks) == len(X) // 64
    assert abs(t.train_loss(t.model) - sum(chunks) / len(chunks)) < 1e-5


def test_skipgram_ns_scores_are_dot_products_and_its_batch_loss_a_sum_over_rows():
    t = tasks.skipgram_ns(0)
    x, y = next(iter(t.batches()))
    m = t.model
    assert x.shape == (64, 7) and t.steps == 312
    s = m(x)
    assert torch.allclose(s[:, 2], (m.centre.weight[x[:, 0]] * m.context.weight[x[:, 3]]).sum(-1))
    logsig = torch.nn.functional.logsigmoid
    rows = -(logsig(s[:, 0]) + logsig(-s[:, 1:]).sum(1))
    assert torch.allclose(t.loss(m, x, y), rows.sum(), rtol=1e-5)
    Xtr = tasks._skipgram_pairs()[0]
    full = -(logsig(m(Xtr)[:, 0]) + logsig(-m(Xtr)[:, 1:]).sum(1))
    assert abs(t.train_loss(m) - float(full.mean().detach())) < 1e-5
    # sparse rows: one batch's gradient leaves most of each table untouched
    t.loss(m, x, y).backward()
    assert (m.centre.weight.grad.abs().sum(1) > 0).sum() <= 64
    assert (m.context.weight.grad.abs().sum(1) > 0).sum() <= 6 * 64 < 800


def test_adding_rnn_is_a_gateless_tanh_rnn_on_sums_of_two_marked_values():
    t = tasks.adding_rnn(0)
    X, y, _, _ = tasks._adding_sequences()
    assert X.shape[1:] == (10, 2) and t.steps == 500
    assert bool((X[:, :, 1].sum(1) == 2).all())
    assert bool((X[:, :5, 1].sum(1) == 1).all())  # one mark in each half
    noise = y[:, 0] - (X[:, :, 0] * X[:, :, 1]).sum(1)
    assert 0.14 < float(noise.std()) < 0.16
    rnn = t.model.rnn
    assert isinstance(rnn, torch.nn.RNN) and rnn.nonlinearity == "tanh" and rnn.hidden_size == 32
    x, _ = next(iter(t.batches()))
    h = torch.zeros(len(x), 32)
    for k in range(x.shape[1]):
        h = torch.tanh(x[:, k] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0
                       + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
    assert torch.allclose(t.model(x), t.model.out(h), atol=1e-5)


def test_digits_distill_loss_is_the_kl_divergence_from_the_teacher():
    t = tasks.digits_distill(0)
    Xtr, P, _, _ = tasks._teacher_targets()
    assert torch.allclose(P.sum(-1), torch.ones(len(P)), atol=1e-5) and t.steps == 296
    entropy = float(-(P.double() * P.double().log()).sum(-1).mean())
    assert 0.99 < entropy < 1.01
    x, p = next(iter(t.batches()))
    logq = torch.log_softmax(t.model(x).double(), -1)
    kl = (p.double() * (p.double().log() - logq)).sum(-1).mean()
    assert abs(float(t.loss(t.model, x, p).detach()) - float(kl.detach())) < 1e-5 and float(kl.detach()) > 0
    P64 = P.double()
    full = (P64 * (P64.log() - torch.log_softmax(t.model(Xtr).double(), -1))).sum(-1).mean()
    assert abs(t.train_loss(t.model) - float(full.detach())) < 1e-9


def test_pinn_poisson_loss_is_the_equation_s_residual_by_second_derivatives():
    t = tasks.pinn_poisson(0)
    assert t.steps == 800
    x = torch.linspace(0.05, 0.95, 7).unsqueeze(1).double()
    # the source is the exact solution's second derivative, scaled (by finite differences)
    h, scale = 1e-3, sum(a * (k * math.pi) ** 2 for k, a in tasks._PINN_MODES)
    u = tasks._pinn_solution
    d2 = (u(x + h) - 2 * u(x) + u(x - h)) / h ** 2
    assert torch.allclose(tasks._pinn_source(x), d2 / scale, atol=1e-5)
    assert abs(float(u(torch.tensor(0.0)))) < 1e-12 and abs(float(u(torch.tensor(1.0)))) < 1e-6
    # the loss by autograd equals the residual by finite differences of the net, in float64
    m = t.model.double()
    f = tasks._pinn_source(x)
    fd = (m(x + h) - 2 * m(x) + m(x - h)) / h ** 2
    ends = m(torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    want = float((((fd / scale - f) ** 2).mean() + (ends ** 2).sum()).detach())
    with torch.no_grad():  # as in the probe: the loss still takes its second derivative
        got = float(t.loss(m, x, f).detach())
    assert abs(got - want) < 1e-6 * max(1.0, abs(want)) and want > 0
    m.float()
    # it trains: the loss depends on the parameters through the second derivative
    xb, fb = next(iter(t.batches()))
    assert xb.shape == (64, 1) and float(xb.min()) >= 0 and float(xb.max()) <= 1
    t.loss(t.model, xb, fb).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in t.model.parameters())


def test_focal_unequal_is_the_focal_loss_on_unequal_classes():
    t = tasks.focal_unequal(0)
    Xtr, ytr, Xte, yte = tasks._unequal_classes()
    shares = torch.bincount(ytr, minlength=5).double() / len(ytr)
    assert shares[0] > 0.5 and shares[4] < 0.07 and t.steps == 460
    x, y = next(iter(t.batches()))
    p = torch.softmax(t.model(x).double(), -1).gather(1, y.unsqueeze(1)).squeeze(1)
    want = float((-(1 - p) ** 2 * p.log()).mean().detach())
    assert abs(float(t.loss(t.model, x, y).detach()) - want) < 1e-5
    name, value = t.test_metric(t.model)
    pred = t.model(Xte).argmax(-1)
    recalls = [float((pred[yte == c] == c).double().mean()) for c in range(5)]
    assert name == "test_bal_acc" and abs(value - sum(recalls) / 5) < 1e-6


def test_round_27_s_held_out_tasks_are_in_the_selection_of_round_28():
    for name in ("cox_survival", "set_deepsets", "ring_score", "ordinal_latent", "ring_flow",
                 "wave_mdn", "digits_vae", "ctc_frames", "pinn_poisson"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def test_ring_flow_is_a_normalised_density_and_reads_zero_at_the_true_one():
    t = tasks.ring_flow(0)
    g = torch.linspace(-12, 12, 961)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():  # a random flow: the log-determinants must keep it a density
        for p in t.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        mass = float(t.model(pts).double().exp().sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1) < 1e-3
    Xtr, Xte, entropy = tasks._ring_points()
    assert Xtr.shape == (3000, 2) and Xte.shape == (1000, 2)
    assert float(-tasks._ring_log_density(Xtr).mean() / 2) - entropy == 0
    x, y = next(iter(t.batches()))
    want = float(-t.model(x).mean() / 2) - entropy
    assert abs(float(t.loss(t.model, x, y).detach()) - want) < 1e-6
    assert t.test_metric(t.model)[0] == "test_nll_excess" and t.steps == 930


def test_wave_mdn_nll_and_the_conditional_entropy_of_its_data():
    t = tasks.wave_mdn(0)
    x, y = next(iter(t.batches()))
    logits, mu, log_sigma = t.model(x)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits.double()),
        torch.distributions.Normal(mu.double(), log_sigma.double().exp()))
    want = float(-mix.log_prob(y.double().squeeze(-1)).mean())
    _, _, _, _, entropy = tasks._inverse_wave()
    assert abs(float(t.loss(t.model, x, y).detach()) + entropy - want) < 1e-5
    # H(y | x) = H(x | y) + H(y) - H(x): H(y) = 0 (uniform on [0, 1]), H(x | y) Gaussian, H(x) by
    # quadrature of p(x) = ∫ N(x; wave(y), σ²) dy; the training set's estimate within its noise
    s = tasks._MDN_NOISE
    ys = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    xs = torch.linspace(-1, 2, 3001, dtype=torch.float64)
    px = torch.exp(-(xs[:, None] - tasks._wave(ys)[None]) ** 2 / (2 * s * s)).mean(1)
    px = px / math.sqrt(2 * math.pi * s * s)
    h_x = float(-(px * px.clamp_min(1e-300).log()).sum() * (xs[1] - xs[0]))
    assert abs(entropy - (0.5 * math.log(2 * math.pi * math.e * s * s) - h_x)) < 0.03
    assert t.test_metric(t.model)[0] == "test_nll_excess" and t.steps == 930


def test_digits_vae_replays_its_latent_draw_and_its_loss_is_zero_at_a_perfect_fit():
    t = tasks.digits_vae(0)
    x, y = next(iter(t.batches()))
    state = torch.get_rng_state()
    a = float(t.loss(t.model, x, y).detach())
    torch.set_rng_state(state)
    b = float(t.loss(t.model, x, y).detach())
    c = float(t.loss(t.model, x, y).detach())  # a fresh draw
    assert a == b and a != c and a > 0
    Xtr, _, entropy = tasks._digit_pixels()
    q = Xtr.double().clamp(1e-12, 1 - 1e-12)
    zero = torch.zeros(len(Xtr), 4, dtype=torch.float64)
    perfect = tasks._neg_elbo_of(torch.logit(q), zero, zero, Xtr.double(), entropy)
    assert abs(float(perfect)) < 1e-9
    assert t.train_loss(t.model) == t.train_loss(t.model)  # one fixed draw
    assert t.test_metric(t.model)[0] == "test_neg_elbo" and t.steps == 222


def test_ctc_frames_labels_and_greedy_decoding():
    Xtr, ytr, Xte, yte = tasks._ctc_sequences()
    assert Xtr.shape == (3000, 24, 8) and yte.shape == (1000, 6)
    lengths = ytr[:, 0]
    assert int(lengths.min()) == 3 and int(lengths.max()) == 5
    for row in ytr[:200].tolist():
        labels = row[1:1 + row[0]]
        assert all(1 <= s <= 4 for s in labels) and all(a != b for a, b in zip(labels, labels[1:]))
        assert all(s == 0 for s in row[1 + row[0]:])
    # a model whose frames spell each test sequence's labels (blank, symbol, symbol, blank, ...)
    frames = torch.zeros(len(yte), 24, dtype=torch.long)
    for i, row in enumerate(yte.tolist()):
        for j, s in enumerate(row[1:1 + row[0]]):
            frames[i, 1 + 3 * j:3 + 3 * j] = s
    spelled = torch.log(F.one_hot(frames, 5).double() * (1 - 4e-6) + 1e-6)

    class Oracle(torch.nn.Module):
        def forward(self, X):
            return spelled[: len(X)].permute(1, 0, 2)

    assert tasks._ctc_exact(Oracle(), Xte, yte) == 1.0
    frames[0, 1] = frames[0, 2] = 0  # drop sequence 0's first symbol
    spelled = torch.log(F.one_hot(frames, 5).double() * (1 - 4e-6) + 1e-6)
    assert tasks._ctc_exact(Oracle(), Xte, yte) == 1.0 - 1 / len(yte)
    assert tasks._eval_ctc(Oracle(), Xte[:1], yte[:1]) > 1.0  # CTC sees the missing symbol
    t = tasks.ctc_frames(0)
    x, y = next(iter(t.batches()))
    logp = t.model(x)
    want = F.ctc_loss(logp, y[:, 1:], torch.full((len(y),), 24), y[:, 0], reduction="none")
    assert abs(float(t.loss(t.model, x, y).detach()) - float((want / y[:, 0]).mean().detach())) < 1e-5
    assert t.steps == 279


def test_ring_score_true_score_is_the_gradient_of_the_noised_ring_s_log_density():
    """The ring (σ 0.2) convolved with N(0, 0.5²) is eight Gaussians of variance 0.2² + 0.5²."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], -1)
    cov = (0.2 ** 2 + 0.5 ** 2) * torch.eye(2, dtype=torch.float64)
    noised = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((8,), 1 / 8, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(centres, cov))
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(300, 2, generator=g, dtype=torch.float64)).requires_grad_()
    grad, = torch.autograd.grad(noised.log_prob(x).sum(), x)
    assert torch.allclose(tasks._ring_score(x.detach()), grad, rtol=1e-9, atol=1e-9)
    # the stored inputs are the ring's points moved by the stored noise, σ·ε
    Xn, eps, Xn_te, eps_te = tasks._noised_ring()
    Xtr, Xte, _ = tasks._ring_points()
    assert torch.allclose(Xn - 0.5 * eps, Xtr, atol=1e-6)
    assert torch.allclose(Xn_te - 0.5 * eps_te, Xte, atol=1e-6)
    assert 0.95 < float(eps.std()) < 1.05 and abs(float(eps.mean())) < 0.05


class _TrueScore(torch.nn.Module):
    def forward(self, x):
        return tasks._ring_score(x)


def test_ring_score_loss_is_zero_at_the_true_score_and_otherwise_its_fisher_divergence():
    t = tasks.ring_score(0)
    assert t.train_loss(_TrueScore()) == 0 and t.test_metric(_TrueScore()) == ("test_dsm_excess", 0)
    # in expectation σ²/2·E‖s − s*‖²: on the 3000 training rows within the cross term's noise
    Xn, _, _, _ = tasks._noised_ring()
    for k in range(3):
        m = tasks.ring_score(k).model
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * k * torch.randn_like(p))
            fisher = float(0.125 * ((m(Xn).double() - tasks._ring_score(Xn)) ** 2).sum(-1).mean())
        assert abs(t.train_loss(m) - fisher) < 0.03 + 0.02 * fisher and fisher > 0.3
    assert t.steps == 465


def test_ring_score_batch_loss_replays_and_is_the_dsm_loss_less_the_true_score_s():
    t = tasks.ring_score(0)
    x, eps = next(iter(t.batches()))
    assert x.shape == eps.shape == (32, 2)
    a, b = t.loss(t.model, x, eps), t.loss(t.model, x, eps)
    assert float(a.detach()) == float(b.detach()) > 0
    s, s_true = t.model(x).double(), tasks._ring_score(x)
    want = 0.5 * ((0.5 * s + eps.double()) ** 2).sum(-1) - 0.5 * ((0.5 * s_true + eps.double()) ** 2).sum(-1)
    assert abs(float(a.detach()) - float(want.mean().detach())) < 1e-5
    assert abs(float(t.loss(_TrueScore(), x, eps))) < 1e-12


def _ordinal_truth(X):
    theta = torch.tensor(tasks._ORD_THRESHOLDS, dtype=torch.float64)
    return tasks._cumulative_log_probs(tasks._ordinal_score(X.double()), theta)


def test_ordinal_latent_probabilities_are_differences_of_sigmoids_at_ordered_thresholds():
    t = tasks.ordinal_latent(0)
    m, X = t.model, tasks._ordinal_data()[0][:50]
    assert torch.allclose(m.thresholds(), torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for scale in (0.1, 1.0, 3.0):
            m.first.copy_(scale * torch.randn(1, generator=g))
            m.gaps.copy_(scale * torch.randn(4, generator=g))
            th = m.thresholds()
            assert bool((th[1:] > th[:-1]).all())
            p = m(X).double().exp()
            assert bool((p > 0).all()) and torch.allclose(p.sum(-1), torch.ones(50, dtype=p.dtype), atol=1e-5)
            cum = torch.sigmoid(th.double()[None] - m.net(X).double())  # P(y ≤ k), k < 5
            assert torch.allclose(p[:, :5].cumsum(-1), cum, atol=1e-5)
        m.gaps.copy_(torch.tensor([-200.0, -30.0, 30.0, 200.0]))  # gaps below float resolution
        th = m.thresholds()
        assert bool((th[1:] >= th[:-1]).all()) and bool(torch.isfinite(th).all())


def test_ordinal_latent_labels_follow_the_true_model_and_its_loss_reads_zero_there():
    Xtr, ytr, Xte, yte, h_tr, h_te = tasks._ordinal_data()
    assert Xtr.shape == (3000, 8) and Xte.shape == (1000, 8) and int(ytr.max()) == 5
    X, y = torch.cat([Xtr, Xte]), torch.cat([ytr, yte])
    p = _ordinal_truth(X).exp()
    # within each third of the rows by f*, the label shares are the true model's mean probabilities
    # (a sign slip in f* would keep the overall shares of these near-symmetric classes)
    order = tasks._ordinal_score(X.double()).argsort()
    for rows in order.chunk(3):
        shares = torch.bincount(y[rows], minlength=6).double() / len(rows)
        assert float((shares - p[rows].mean(0)).abs().max()) < 0.04
    t = tasks.ordinal_latent(0)

    class Truth(torch.nn.Module):
        def forward(self, X):
            return _ordinal_truth(X)

    assert abs(t.train_loss(Truth())) < 1e-12 and abs(t.test_metric(Truth())[1]) < 1e-12
    # the floor is the rows' own −log P*(y | x): the exact conditional entropy within its noise
    lp = _ordinal_truth(Xtr)
    nll, exact = -lp.gather(1, ytr[:, None]).squeeze(1), -(lp.exp() * lp).sum(-1)
    assert abs(h_tr - float(nll.mean())) < 1e-12
    assert abs(h_tr - float(exact.mean())) < 4 * float((nll - exact).std()) / math.sqrt(3000)
    assert 1.1 < h_tr < 1.4 < math.log(6) - 0.3  # labels informative, far from certain
    x, y = next(iter(t.batches()))
    a, b = t.loss(t.model, x, y), t.loss(t.model, x, y)
    assert float(a.detach()) == float(b.detach()) > 0
    want = -t.model(x).double().gather(1, y[:, None]).mean() - h_tr
    assert abs(float(a.detach()) - float(want.detach())) < 1e-5
    assert t.test_metric(t.model)[0] == "test_nll_excess" and t.steps == 465


class _TrueHazard(torch.nn.Module):
    def __init__(self, sign=1.0, shift=0.0):
        super().__init__()
        self.sign, self.shift = sign, shift

    def forward(self, X):
        return (self.sign * tasks._cox_log_hazard(X.double()) + self.shift)[:, None]


class _Double(torch.nn.Module):
    """A float64 copy of a model: its batch loss and its full loss then round alike."""

    def __init__(self, m):
        super().__init__()
        self.m = copy.deepcopy(m).double()

    def forward(self, x):
        return self.m(x.double())


def _assert_full_loss_is_the_batch_loss_over_all_rows(t, X, Y):
    """The whole training set's loss is the batch loss with every row in one batch: within fp32
    rounding for the model, within 1e-9 for its float64 copy."""
    assert abs(float(t.loss(t.model, X, Y).detach()) - t.train_loss(t.model)) < 1e-5
    m64 = _Double(t.model)
    assert abs(float(t.loss(m64, X, Y).detach()) - t.train_loss(m64)) < 1e-9


def _ce_by_hand(rows, labels):
    """The mean cross-entropy of ``rows`` (lists of logits) to ``labels`` (ints), by explicit sums:
    log Σ exp(row) − row[label]."""
    return sum(math.log(sum(math.exp(v) for v in row)) - row[k]
               for row, k in zip(rows, labels)) / len(rows)


def _assert_batch_and_test_mse_by_hand(t, outputs, Xte, yte):
    """A task whose loss is the MSE to noisy targets y[..., 0]: its first batch's loss is the mean
    of (output − target)² by explicit sums over the 32 rows and ``outputs`` outputs, and its test
    metric is that mean on the test rows. Returns the batch loss."""
    x, y = next(iter(t.batches()))
    p = t.model(x).double().detach()
    assert p.shape == (32, outputs)
    want = sum((p[i, k] - y[i, k, 0]) ** 2 for i in range(32) for k in range(outputs))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - float(want) / (32 * outputs)) < 1e-5
    name, value = t.test_metric(t.model)
    want_te = float(((t.model(Xte).double().detach() - yte[..., 0]) ** 2).mean())
    assert name == "test_mse" and abs(value - want_te) < 1e-5
    return a


def _shuffled_items(x):
    """``x`` (batch, items, features) with each row's items in a fixed random order, and that order."""
    perm = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(0)).argsort(-1)
    shuffled = x.gather(1, perm[..., None].expand_as(x))
    assert not torch.equal(shuffled, x)
    return shuffled, perm


def test_cox_survival_data_censoring_and_the_true_log_hazard():
    Xtr, ytr, Xte, yte = tasks._survival_data()
    assert Xtr.shape == (1500, 8) and Xte.shape == (500, 8) and ytr.shape == (1500, 3)
    for X, y in ((Xtr, ytr), (Xte, yte)):
        assert 0.2 <= 1 - float(y[:, 1].mean()) <= 0.4
        assert torch.equal(y[:, 2], tasks._cox_log_hazard(X.double())) and bool((y[:, 0] > 0).all())
    f = torch.cat([ytr, yte])[:, 2]
    assert abs(float(f.mean())) < 0.15 and 1.6 < float(f.std()) < 2.1
    # a higher log-hazard fails sooner: the true risk ranks the test rows well, its negation as badly
    t = tasks.cox_survival(0)
    name, c = t.test_metric(_TrueHazard())
    assert name == "test_cindex" and 0.75 < c < 0.9
    assert abs(t.test_metric(_TrueHazard(-1.0))[1] - (1 - c)) < 1e-12
    assert t.test_metric(_TrueHazard(shift=5.0))[1] == c


def test_cox_c_index_counts_the_ordered_pairs_whose_earlier_time_is_an_event():
    _, _, Xte, yte = tasks._survival_data()
    X, y = Xte[:60], yte[:60]
    r = torch.randn(60, generator=torch.Generator().manual_seed(0)).double()
    r[1] = r[2]  # one tie in risk, counted half

    class Risk(torch.nn.Module):
        def forward(self, X):
            return r[: len(X), None]

    num = den = 0.0
    for i in range(60):
        for j in range(60):
            if y[i, 1] == 1 and y[i, 0] < y[j, 0]:
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    assert abs(tasks._cindex(Risk(), X, y) - num / den) < 1e-12


def test_cox_breslow_partial_likelihood_by_hand():
    # rows by time: 1 (event), 0 (event), 3 (event), 2 (censored, in the first three risk sets only)
    time = torch.tensor([2.0, 1.0, 4.0, 3.0], dtype=torch.float64)
    event = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    eta = torch.tensor([0.5, -0.2, 0.1, 0.3], dtype=torch.float64)
    e = [math.exp(v) for v in eta.tolist()]
    want = (math.log(e[0] + e[1] + e[2] + e[3]) + 0.2
            + math.log(e[0] + e[2] + e[3]) - 0.5
            + math.log(e[2] + e[3]) - 0.3) / 3
    assert abs(float(tasks._breslow_nll(eta, time, event)) - want) < 1e-12
    # the task's loss on these rows: less the same for the stored true log-hazard (here 0: log|R|)
    y = torch.stack([time, event, torch.zeros(4, dtype=torch.float64)], -1)
    t = tasks.cox_survival(0)
    got = float(t.loss(lambda x: eta[:, None], None, y))
    assert abs(got - (want - (math.log(4) + math.log(3) + math.log(2)) / 3)) < 1e-12
    # a batch without events: 0, and a backward pass that leaves zero gradients, not NaN
    x = torch.randn(4, 8)
    L = t.loss(t.model, x, torch.stack([time, torch.zeros(4, dtype=torch.float64), y[:, 2]], -1))
    L.backward()
    assert float(L.detach()) == 0 and all(bool((p.grad == 0).all()) for p in t.model.parameters())


def test_cox_survival_loss_is_zero_at_the_true_log_hazard_and_its_batch_and_full_losses_agree():
    Xtr, ytr, _, _ = tasks._survival_data()
    t = tasks.cox_survival(0)
    x, y = next(iter(t.batches()))
    for shift in (0.0, 3.0):  # partial likelihoods do not see a constant added to the log-risk
        assert abs(t.train_loss(_TrueHazard(shift=shift))) < 1e-9
        assert abs(float(t.loss(_TrueHazard(shift=shift), x, y))) < 1e-9
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    assert t.steps == 230  # replay: test_recent_tasks_replay_from_the_seed


class _SetOracle(torch.nn.Module):
    """The noise-free target g of each stored set, looked up by the set's points."""

    def __init__(self):
        super().__init__()
        Xtr, ytr, Xte, yte = tasks._gaussian_sets()
        self.table = {x.numpy().tobytes(): float(v) for X, y in ((Xtr, ytr), (Xte, yte))
                      for x, v in zip(X, y[:, 1])}

    def forward(self, X):
        return torch.tensor([self.table[x.numpy().tobytes()] for x in X], dtype=torch.float64)


def test_set_deepsets_data_are_gaussian_sets_with_noisy_targets():
    Xtr, ytr, Xte, yte = tasks._gaussian_sets()
    assert Xtr.shape == (2000, 12, 2) and Xte.shape == (500, 12, 2) and ytr.shape == (2000, 2)
    noise = torch.cat([ytr, yte])[:, 0] - torch.cat([ytr, yte])[:, 1]
    assert abs(float(noise.std()) - 0.3) < 0.02 and abs(float(noise.mean())) < 0.02
    # the target is the generating covariance's log-determinant plus half the mean's norm: the
    # sets' sample statistics track it (from 12 points the log-determinant comes out low)
    X = torch.cat([Xtr, Xte]).double()
    mu = X.mean(1)
    c = X - mu[:, None]
    plug = torch.logdet(c.transpose(1, 2) @ c / 11) + 0.5 * mu.norm(dim=-1)
    g = torch.cat([ytr, yte])[:, 1]
    assert float(torch.corrcoef(torch.stack([plug, g]))[0, 1]) > 0.9
    assert -0.5 < float((plug - g).mean()) < 0
    lo, hi = 4 * math.log(0.3), 4 * math.log(2.0)  # 2 Σ log s over two axes, each s in [0.3, 2]
    assert lo < float(g.min()) < lo + 1 and hi - 1 < float(g.max()) < hi + 0.5 * 5


def test_set_deepsets_is_invariant_to_the_order_of_a_set_s_points():
    t = tasks.set_deepsets(0)
    x, _ = next(iter(t.batches()))
    shuffled, _ = _shuffled_items(x)
    with torch.no_grad():
        assert torch.allclose(t.model(shuffled), t.model(x), atol=1e-6)
        assert t.model(x).shape == (32,)


def test_set_deepsets_loss_is_the_excess_over_the_noise_free_target_and_zero_there():
    Xtr, ytr, _, _ = tasks._gaussian_sets()
    t = tasks.set_deepsets(0)
    oracle = _SetOracle()
    assert abs(t.train_loss(oracle)) < 1e-9 and abs(t.test_metric(oracle)[1]) < 1e-9
    x, y = next(iter(t.batches()))
    assert abs(float(t.loss(oracle, x, y))) < 1e-9
    a = t.loss(t.model, x, y)
    p = t.model(x).double()
    want = ((p - y[:, 0]) ** 2).mean() - ((y[:, 1] - y[:, 0]) ** 2).mean()
    assert abs(float(a.detach()) - float(want.detach())) < 1e-5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    assert t.test_metric(t.model)[0] == "test_mse_excess" and t.steps == 310


def test_round_28_s_held_out_tasks_are_in_the_selection_of_round_29():
    for name in ("rank_listnet", "lista_sparse"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _true_scores(X):
    """log P of the stored queries (s* less each query's log-sum-exp), looked up by identity."""
    Xtr, ptr, Xte, pte = tasks._ranking_queries()
    return {id(Xtr): ptr, id(Xte): pte}[id(X)].log()[..., None]


def test_rank_listnet_data_are_queries_with_softmax_targets():
    Xtr, ptr, Xte, pte = tasks._ranking_queries()
    assert Xtr.shape == (1200, 10, 12) and Xte.shape == (300, 10, 12) and ptr.shape == (1200, 10)
    assert Xtr.dtype == torch.float32 and ptr.dtype == torch.float64
    p = torch.cat([ptr, pte])
    assert bool((p > 0).all()) and torch.allclose(p.sum(-1), torch.ones(1500, dtype=p.dtype))
    s = p.log() - p.log().mean(-1, keepdim=True)  # s* less its mean over each query's documents
    assert 1.2 < float(s.std()) < 1.6  # 1.5 over all documents, a little less within queries


def test_rank_listnet_loss_is_the_kl_to_the_target_and_zero_there():
    Xtr, ptr, _, _ = tasks._ranking_queries()
    t = tasks.rank_listnet(0)
    x, y = next(iter(t.batches()))
    assert x.shape == (16, 10, 12) and y.shape == (16, 10)
    for shift in (0.0, 3.0):  # a softmax does not see a constant added to a query's scores
        assert abs(t.train_loss(lambda X: _true_scores(X) + shift)) < 1e-12
        assert abs(float(t.loss(lambda x: y.log()[..., None] + shift, x, y))) < 1e-6
    name, value = t.test_metric(_true_scores)
    assert name == "test_ndcg3" and abs(value - 1.0) < 1e-12
    # by hand, in float64: Σ P (log P − log Q) per query, the mean over the batch
    s = t.model(x).squeeze(-1).double().detach()
    want = 0.0
    for q in range(16):
        z = math.log(sum(math.exp(v) for v in s[q].tolist()))
        want += sum(pi * (math.log(pi) - (si - z)) for pi, si in zip(y[q].tolist(), s[q].tolist()))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want / 16) < 1e-5 and a > 0.1
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ptr)
    assert t.train_loss(t.model) > 0.5 and t.steps == 375


def test_rank_listnet_scores_each_document_alone():
    t = tasks.rank_listnet(0)
    x, _ = next(iter(t.batches()))
    shuffled, perm = _shuffled_items(x)
    with torch.no_grad():
        s = t.model(x).squeeze(-1)
        assert s.shape == (16, 10)
        assert torch.allclose(t.model(shuffled).squeeze(-1), s.gather(1, perm), atol=1e-6)


def _ndcg3_by_hand(scores, gains):
    total = 0.0
    for s, g in zip(scores.tolist(), gains.tolist()):
        order = sorted(range(len(s)), key=lambda i: -s[i])  # stable: ties in document order
        dcg = sum(g[i] / math.log2(r + 2) for r, i in enumerate(order[:3]))
        idcg = sum(v / math.log2(r + 2) for r, v in enumerate(sorted(g, reverse=True)[:3]))
        total += dcg / idcg
    return total / len(scores)


def test_rank_listnet_ndcg_at_3_by_hand():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, 10, generator=gen, dtype=torch.float64), -1)
    r = torch.randn(7, 10, generator=gen, dtype=torch.float64)
    r[0, 4] = r[0, 1]  # one tie in score, ranked in the documents' order
    X = torch.zeros(7, 10, 12)

    def scorer(s):
        return lambda X: s[..., None]

    got = tasks._ndcg3(scorer(r), X, p)
    assert abs(got - _ndcg3_by_hand(r, p)) < 1e-12 and 0 < got < 1
    assert abs(tasks._ndcg3(scorer(p.log()), X, p) - 1.0) < 1e-12  # the ideal ranking
    assert abs(tasks._ndcg3(scorer(2 * p + 1), X, p) - 1.0) < 1e-12  # any order-keeping map
    # a model that puts the targets' worst three first scores below one that ranks at random
    assert tasks._ndcg3(scorer(-p), X, p) < got
    bad = r.clone()
    bad[3, 2] = math.nan
    assert math.isnan(tasks._ndcg3(scorer(bad), X, p))
    bad[3, 2] = math.inf
    assert math.isnan(tasks._ndcg3(scorer(bad), X, p))


def test_lista_sparse_data_are_noisy_measurements_of_4_sparse_codes():
    Xtr, ztr, Xte, zte, D = tasks._sparse_codes()
    assert Xtr.shape == (2000, 20) and Xte.shape == (500, 20) and ztr.shape == (2000, 40)
    assert Xtr.dtype == torch.float32 and ztr.dtype == torch.float64 and D.shape == (20, 40)
    assert torch.allclose(D.norm(dim=0), torch.ones(40, dtype=D.dtype), atol=1e-12)
    z = torch.cat([ztr, zte])
    assert bool(((z != 0).sum(-1) == 4).all()) and float(z[z != 0].abs().min()) >= 0.5
    noise = torch.cat([Xtr, Xte]).double() - z @ D.T
    assert abs(float(noise.std()) - 0.1) < 0.005 and abs(float(noise.mean())) < 0.005


def _ista(D, X, steps=5, lam=0.1):
    """Plain ISTA from z = 0 on ½‖y − D z‖² + λ‖z‖₁, step 1/L (float64)."""
    L = float(torch.linalg.eigvalsh(D.T @ D).max())
    z = torch.zeros(len(X), D.shape[1], dtype=torch.float64)
    for _ in range(steps):
        u = z + (X - z @ D.T) @ D / L
        z = u.sign() * (u.abs() - lam / L).clamp_min(0)
    return z


def test_lista_sparse_starts_at_ista_and_its_loss_is_the_code_s_squared_error():
    Xtr, ztr, Xte, zte, D = tasks._sparse_codes()
    t = tasks.lista_sparse(0)
    with torch.no_grad():
        got = t.model(Xtr).double()
    want = _ista(D, Xtr.double())
    assert float((got - want).abs().max()) < 1e-5 and bool(((want != 0).sum(-1) > 0).all())
    assert 0.8 < t.train_loss(t.model) < 1.3  # ISTA's five steps shrink the codes hard
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 20) and y.shape == (32, 40)
    p = t.model(x).double().detach()
    want = sum(sum((a - b) ** 2 for a, b in zip(pr, zr)) for pr, zr in zip(p.tolist(), y.tolist()))
    assert abs(float(t.loss(t.model, x, y).detach()) - want / 32 / 4) < 1e-5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ztr)
    assert t.loss(lambda x: y, x, y) == 0 and t.train_loss(lambda X: ztr) == 0
    name, value = t.test_metric(t.model)
    assert name == "test_code_mse" and abs(value - float(t.loss(t.model, Xte, zte).detach())) < 1e-5
    assert t.steps == 372


@pytest.mark.parametrize("name", ["cox_survival", "set_deepsets", "rank_listnet", "lista_sparse",
                                  "ssm_recall", "tcn_forecast", "node_spiral", "mil_bags",
                                  "crf_tagger", "nam_additive", "soft_trees", "kg_distmult",
                                  "lora_adapt", "tpp_rmtpp", "hypernet_curves",
                                  "lasso_logistic", "sparse_gp", "multitask_heads",
                                  "seq2seq_reverse", "gmm_density", "digits_made",
                                  "hinge_svm", "graph_gat", "conv_denoiser",
                                  "phase_retrieval", "markov_mlm"])
def test_recent_tasks_replay_from_the_seed(name):
    """The same seed builds the same model and the same first batch, with the same loss; another
    seed another order."""
    t, t2 = tasks.TASKS[name](0), tasks.TASKS[name](0)
    (x, y), (x2, y2) = next(iter(t.batches())), next(iter(t2.batches()))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    for p, p2 in zip(t.model.parameters(), t2.model.parameters()):
        assert torch.equal(p, p2)
    assert float(t.loss(t.model, x, y).detach()) == float(t2.loss(t2.model, x2, y2).detach()) > 0
    x1, _ = next(iter(tasks.TASKS[name](1).batches()))
    assert not torch.equal(x, x1)  # another seed, another order


def test_round_29_s_held_out_tasks_are_in_the_selection_of_round_30():
    for name in ("ssm_recall", "tcn_forecast"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _recall_target_by_hand(X):
    """g before its scaling, at steps 24–47, by explicit sums over the lags: the directions m_j
    drawn first from the data's seed, the kernels Gaussian bumps at lags 2, 10 and 20."""
    g = torch.Generator().manual_seed(2048)
    mix = torch.randn(3, 3, generator=g, dtype=torch.float64)
    mix = mix / mix.norm(dim=1, keepdim=True)
    kernels = []
    for c, w in ((2.0, 1.5), (10.0, 3.0), (20.0, 4.0)):
        k = [math.exp(-(j - c) ** 2 / (2 * w * w)) for j in range(24)]
        kernels.append([v / math.sqrt(sum(v * v for v in k)) for v in k])
    s = [X.double() @ mix[j] for j in range(3)]  # (n, 48) each
    u = torch.zeros(len(X), 24, 3, dtype=torch.float64)
    for t in range(24, 48):
        for j in range(3):
            u[:, t - 24, j] = sum(kernels[j][k] * s[j][:, t - k] for k in range(24))
    return 0.6 * u[..., 0] + torch.tanh(1.5 * u[..., 1]) * u[..., 2], u


def test_ssm_recall_data_are_a_noisy_function_of_smoothed_inputs_up_to_20_steps_back():
    Xtr, ytr, Xte, yte = tasks._recall_sequences()
    assert Xtr.shape == (2000, 48, 3) and Xte.shape == (500, 48, 3) and ytr.shape == (2000, 24, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 24, 2)
    X, y = torch.cat([Xtr, Xte]), torch.cat([ytr, yte])
    assert abs(float(X.mean())) < 0.01 and abs(float(X.std()) - 1) < 0.01
    raw, u = _recall_target_by_hand(X)
    assert abs(float(y[..., 1].std()) - 1) < 1e-9
    assert float((y[..., 1] - raw / raw.std()).abs().max()) < 1e-9
    noise = y[..., 0] - y[..., 1]
    assert abs(float(noise.std()) - 0.3) < 0.005 and abs(float(noise.mean())) < 0.005
    assert float((u.std((0, 1)) - 1).abs().max()) < 0.02  # each u_j ~ N(0, 1)
    # the product of the lag-10 and lag-20 parts holds 60 % of the target's variance (the lag-2
    # part the rest): most of the target needs the inputs of 10 to 20 steps before
    product = (torch.tanh(1.5 * u[..., 1]) * u[..., 2]).var() / raw.var()
    assert 0.55 < float(product) < 0.65


def test_ssm_recall_layers_are_diagonal_linear_recurrences_with_learned_decays_in_0_1():
    t = tasks.ssm_recall(0)
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 48, 3) and y.shape == (32, 24, 2)
    first, second = t.model.layers
    with torch.no_grad():
        for layer in (first, second):
            a = layer.decay().double()
            assert a.shape == (32,) and bool(((a > 0) & (a < 1)).all())
            tau = -1 / a.log()  # started log-spaced from 1 to 32 steps
            assert abs(float(tau[0]) - 1) < 1e-4 and abs(float(tau[-1]) - 32) < 1e-3
            assert bool((tau[1:] > tau[:-1]).all())
        # the closed form h_t = Σ_{s ≤ t} a^(t−s) B x_s, in float64
        a = first.decay().double()
        u = x.double() @ first.B.weight.double().T
        d = (torch.arange(48)[:, None] - torch.arange(48)[None, :]).double()  # t − s
        K = torch.where(d >= 0, a[:, None, None] ** d.clamp_min(0), 0.0)  # (channel, t, s)
        want = torch.einsum("cts,bsc->btc", K, u)
        got = first.states(x).double()
        assert float((got - want).abs().max()) < 1e-4 and float(want.abs().max()) > 1
        # the net: each layer's MLP on its states, the first's output the second's input
        z = first.readout(first.states(x))
        assert z.shape == (32, 48, 32)
        assert torch.allclose(t.model(x), second.readout(second.states(z)).squeeze(-1))
        # causal: a change at step 30 leaves the predictions before it as they were
        x2 = x.clone()
        x2[:, 30] += 1.0
        diff = (t.model(x2) - t.model(x)).abs().amax(0)
        assert float(diff[:30].max()) == 0 and bool((diff[30:] > 0).all())
    # the decays are learned: the loss has a gradient in ν
    t.loss(t.model, x, y).backward()
    assert float(first.nu.grad.abs().min()) > 0 and float(second.nu.grad.abs().min()) > 0


def _noise_free(data, skip=0):
    """A model predicting the stored noise-free targets of the data's rows, looked up by identity;
    ``skip`` steps without a target (predicted 0) before them."""
    Xtr, ytr, Xte, yte = data
    table = {id(Xtr): ytr[..., 1], id(Xte): yte[..., 1]}

    def predict(X):
        clean = table[id(X)]
        return torch.cat([torch.zeros(len(X), skip, dtype=clean.dtype), clean], 1)

    return predict


def test_ssm_recall_loss_is_the_mse_to_the_noisy_targets_of_steps_24_to_47():
    Xtr, ytr, Xte, yte = data = tasks._recall_sequences()
    t = tasks.ssm_recall(0)
    x, y = next(iter(t.batches()))
    p = t.model(x).double().detach()
    want = sum((p[i, 24 + j] - y[i, j, 0]) ** 2 for i in range(32) for j in range(24))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - float(want) / (32 * 24)) < 1e-5 and a > 0.5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the noise-free target reads the noise's own cost, about 0.09
    oracle = _noise_free(data, skip=24)
    assert 0.085 < t.train_loss(oracle) < 0.095 and 0.08 < t.test_metric(oracle)[1] < 0.1
    name, value = t.test_metric(t.model)
    assert name == "test_mse" and abs(value - float(t.loss(t.model, Xte, yte).detach())) < 1e-5
    assert t.train_loss(t.model) > 1 and t.steps == 372


def test_lorenz_series_is_rk4_of_the_lorenz_system_every_tenth_step():
    import numpy as np
    from scipy.integrate import solve_ivp

    def lorenz(_, s):
        return [10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2]]

    start = [1.0, 2.0, 20.0]
    got = tasks._lorenz_x(21, start, burn=0)
    ref = solve_ivp(lorenz, (0, 2), start, method="DOP853", t_eval=np.linspace(0, 2, 21),
                    rtol=1e-12, atol=1e-12).y[0]
    assert float(got[0]) == 1.0 and float(np.abs(got.numpy() - ref).max()) < 2e-3  # RK4's error
    assert float(np.abs(ref).max()) > 5  # it moved
    assert torch.equal(tasks._lorenz_x(3, start, burn=50), got[5:8])


def test_tcn_forecast_data_are_windows_of_a_noisy_standardised_lorenz_coordinate():
    Xtr, ytr, Xte, yte = tasks._lorenz_windows()
    assert Xtr.shape == (3965, 1, 32) and Xte.shape == (965, 1, 32) and ytr.shape == (3965, 4, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (965, 4, 2)
    for X, y in ((Xtr, ytr), (Xte, yte)):
        # consecutive windows; the targets are the observations to come (window i's h-th is the
        # last observation of window i + h)
        assert torch.equal(X[1:, 0, :-1], X[:-1, 0, 1:])
        for h in range(1, 5):
            assert torch.equal(y[:-h, h - 1, 0], X[h:, 0, -1].double())
            if h > 1:  # noisy and noise-free alike
                assert torch.equal(y[:1 - h, h - 1], y[h - 1:, 0])
        clean = torch.cat([y[:, 0, 1], y[-1, 1:, 1]])  # the noise-free values from step 32 on
        assert abs(float(clean.mean())) < 0.1 and abs(float(clean.std()) - 1) < 0.02
        assert int((clean[1:].sign() != clean[:-1].sign()).sum()) > 40  # it switches lobes
    noise = torch.cat([ytr[:, 0], yte[:, 0]])
    noise = noise[:, 0] - noise[:, 1]
    assert abs(float(noise.std()) - 0.3) < 0.012 and abs(float(noise.mean())) < 0.02


def test_tcn_forecast_is_causal_with_a_receptive_field_of_31_steps():
    t = tasks.tcn_forecast(0)
    x, _ = next(iter(t.batches()))
    assert x.shape == (32, 1, 32)
    with torch.no_grad():
        s = t.model.sequence(x)
        assert s.shape == (32, 4, 32) and torch.equal(t.model(x), s[..., -1])
        for pos in (0, 10, 31):
            x2 = x.clone()
            x2[..., pos] += 1.0
            diff = (t.model.sequence(x2) - s).abs().amax((0, 1))  # per step
            # out of reach: nothing, or rounding if a convolution backend mixes a tile's inputs
            # (the farthest taps move the output by ~2e-5 at the start)
            assert float(diff[:pos].sum()) <= 1e-7 and float(diff[pos + 31:].sum()) <= 1e-7
            assert bool((diff[pos:pos + 31] > 0).all())


def test_tcn_forecast_blocks_are_gated_dilated_causal_convolutions_by_hand():
    t = tasks.tcn_forecast(0)
    x, _ = next(iter(t.batches()))
    m = t.model
    with torch.no_grad():
        z = m.inp(x).double()  # (32 rows, 16 channels, 32 steps)
        assert len(m.blocks) == 4 and z.shape == (32, 16, 32)
        for block, dilation in zip(m.blocks, (1, 2, 4, 8)):
            w, b = block.conv.weight.double(), block.conv.bias.double()
            assert w.shape == (32, 16, 3)
            conv = b[None, :, None].repeat(32, 1, 32)
            for step in range(32):
                for tap in range(3):  # tap k reads the input (2 − k)·dilation steps back
                    src = step - (2 - tap) * dilation
                    if src >= 0:
                        conv[:, :, step] += z[:, :, src] @ w[:, :, tap].T
            gated = torch.tanh(conv[:, :16]) * torch.sigmoid(conv[:, 16:])
            z = z + (torch.einsum("oc,nct->not", block.mix.weight.double()[..., 0], gated)
                     + block.mix.bias.double()[None, :, None])
        want = (torch.einsum("hc,nct->nht", m.head.weight.double()[..., 0], F.relu(z))
                + m.head.bias.double()[None, :, None])
        assert float((m.sequence(x).double() - want).abs().max()) < 1e-5
        assert float(want.abs().max()) > 0.1


def test_tcn_forecast_loss_is_the_mse_to_the_noisy_next_four_values():
    Xtr, ytr, Xte, yte = data = tasks._lorenz_windows()
    t = tasks.tcn_forecast(0)
    x, y = next(iter(t.batches()))
    assert y.shape == (32, 4, 2)
    p = t.model(x).double().detach()
    want = sum((p[i, h] - y[i, h, 0]) ** 2 for i in range(32) for h in range(4))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - float(want) / (32 * 4)) < 1e-5 and a > 0.5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the noise-free next values read the noise's own cost, about 0.09; the last observation
    # held for all four horizons (persistence) far more: the forecast needs the dynamics
    oracle = _noise_free(data)
    assert 0.085 < t.train_loss(oracle) < 0.095 and 0.08 < t.test_metric(oracle)[1] < 0.1
    assert t.train_loss(lambda X: X[:, 0, -1:].expand(-1, 4)) > 1
    name, value = t.test_metric(t.model)
    assert name == "test_mse" and abs(value - float(t.loss(t.model, Xte, yte).detach())) < 1e-5
    assert t.train_loss(t.model) > 1 and t.steps == 369


def test_round_30_s_held_out_tasks_are_in_the_selection_of_round_31():
    for name in ("node_spiral", "mil_bags"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def test_node_spiral_data_are_two_interleaved_spiral_arms_with_flipped_labels():
    Xtr, ytr, Xte, yte = tasks._spirals()
    assert Xtr.shape == (2000, 2) and Xte.shape == (500, 2) and ytr.shape == (2000, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.long and yte.shape == (500, 2)
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    r = X.norm(dim=-1)
    assert float(r.max()) <= 2 + 1e-6 and abs(float((r < math.sqrt(2)).double().mean()) - 0.5) < 0.03
    # the class by hand: which side of the spiral boundary sin(θ − 0.875π r) = 0 (points within
    # float32 rounding of the boundary left out)
    phase = torch.atan2(X[:, 1], X[:, 0]) - 0.875 * math.pi * r
    far = phase.sin().abs() > 1e-5
    assert torch.equal((phase.sin() > 0).long()[far], y[far, 1]) and int(far.sum()) > 2490
    assert abs(float(y[:, 1].double().mean()) - 0.5) < 0.03  # balanced classes
    flips = (y[:, 0] != y[:, 1]).double().mean()
    assert abs(float(flips) - 0.1) < 0.015 and set(y[:, 0].tolist()) == {0, 1}


def _rk4_by_hand(field, h, steps=8):
    dt = 1.0 / steps
    out = [h]
    for _ in range(steps):
        k1 = field(h)
        k2 = field(h + 0.5 * dt * k1)
        k3 = field(h + 0.5 * dt * k2)
        k4 = field(h + dt * k3)
        h = h + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        out.append(h)
    return out


def test_node_spiral_model_is_rk4_of_a_tanh_field_in_a_lifted_state():
    t = tasks.node_spiral(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 2) and y.shape == (32, 2)
    with torch.no_grad():
        W1, b1 = m.field[0].weight.double(), m.field[0].bias.double()
        W2, b2 = m.field[2].weight.double(), m.field[2].bias.double()
        assert W1.shape == (32, 8) and W2.shape == (8, 32) and m.lift.weight.shape == (8, 2)

        def field(h):
            return torch.tanh(h @ W1.T + b1) @ W2.T + b2

        h0 = x.double() @ m.lift.weight.double().T + m.lift.bias.double()
        hs = _rk4_by_hand(field, h0)
        traj = m.trajectory(x).double()
        assert traj.shape == (32, 9, 8)
        assert float((traj - torch.stack(hs, 1)).abs().max()) < 1e-5
        assert float((hs[-1] - h0).abs().max()) > 0.05  # the flow moves the state
        want = hs[-1] @ m.readout.weight.double().T + m.readout.bias.double()
        assert float((m(x).double() - want).abs().max()) < 1e-5 and m(x).shape == (32, 2)
        # RK4's order: eight steps agree with 64 to well within the flow's own size
        fine = _rk4_by_hand(field, h0, steps=64)[-1]
        assert float((fine - hs[-1]).abs().max()) < 1e-4
    # the field is learned: the loss has a gradient in both of its layers
    t.loss(m, x, y).backward()
    assert float(m.field[0].weight.grad.abs().sum()) > 0 and float(m.field[2].weight.grad.abs().sum()) > 0


def test_node_spiral_loss_is_the_cross_entropy_to_the_noisy_labels():
    Xtr, ytr, Xte, yte = tasks._spirals()
    t = tasks.node_spiral(0)
    x, y = next(iter(t.batches()))
    want = _ce_by_hand(t.model(x).double().detach().tolist(), y[:, 0].tolist())
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want) < 1e-5 and a > 0.5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the true classes, predicted with the flip rate's confidence, cost the flips' entropy
    oracle = lambda X: torch.log(0.1 + 0.8 * F.one_hot(  # noqa: E731
        {id(Xtr): ytr, id(Xte): yte}[id(X)][:, 1], 2).double())
    f = float((ytr[:, 0] != ytr[:, 1]).double().mean())  # the training labels' own flip rate
    assert abs(t.train_loss(oracle) - (-f * math.log(0.1) - (1 - f) * math.log(0.9))) < 1e-9
    name, value = t.test_metric(t.model)
    want_acc = float((t.model(Xte).argmax(-1) == yte[:, 0]).double().mean())
    assert name == "test_acc" and abs(value - want_acc) < 1e-6
    assert abs(t.test_metric(oracle)[1] - float((yte[:, 0] == yte[:, 1]).double().mean())) < 1e-6
    assert t.train_loss(t.model) > 0.6 and t.steps == 372


def _bag_labels_by_hand(X):
    """Each instance's digit, found by its nearest standardised image (the pixel noise is N(0, 1)
    on 64 pixels, far less than the distance between two digit images), and each bag's count of 9s."""
    Xa, ya, Xb, yb = tasks._digits()
    mu, sd = Xa.mean(0), Xa.std(0).clamp_min(0.1)
    imgs, labels = (torch.cat([Xa, Xb]) - mu) / sd, torch.cat([ya, yb])
    d = torch.cdist(X.reshape(-1, 64), imgs)
    return labels[d.argmin(-1)].reshape(X.shape[:2]), d.min(-1).values


def test_mil_bags_data_are_noisy_bags_of_digits_positive_iff_they_hold_a_9():
    Xtr, ytr, Xte, yte = tasks._digit_bags()
    assert Xtr.shape == (6000, 12, 64) and Xte.shape == (500, 12, 64) and ytr.shape == (6000, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 2)
    for X, y in ((Xtr[:1000], ytr[:1000]), (Xte, yte)):
        digits, dist = _bag_labels_by_hand(X)
        nines = (digits == 9).sum(-1)
        # the nearest image misreads a few instances in a thousand through the noise (another digit
        # as a 9, …)
        assert float(((nines > 0).double() == y[:, 1]).double().mean()) > 0.95
        assert abs(float(nines[y[:, 1] == 1].double().mean()) - 2) < 0.15  # 1–3 of them
        assert float((nines[y[:, 1] == 0] == 0).double().mean()) > 0.95
        # the pixel noise: about N(0, 1) on each of the 64 pixels
        assert abs(float((dist ** 2).mean()) / 64 - 1) < 0.05
    y = torch.cat([ytr, yte])
    assert abs(float(y[:, 1].mean()) - 0.5) < 0.03  # balanced bags
    assert abs(float((y[:, 0] != y[:, 1]).double().mean()) - 0.1) < 0.012
    assert set(y[:, 0].tolist()) == {0.0, 1.0}


def test_mil_bags_pool_by_gated_attention_and_ignore_the_order_within_a_bag():
    t = tasks.mil_bags(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 12, 64) and y.shape == (32, 2)
    with torch.no_grad():
        W, b = m.embed[0].weight.double(), m.embed[0].bias.double()
        V, U, w = m.V.weight.double(), m.U.weight.double(), m.w.weight.double()[0]
        assert W.shape == (32, 64) and V.shape == (16, 32) and U.shape == (16, 32) and w.shape == (16,)
        want = torch.zeros(32, dtype=torch.float64)
        for i in range(32):
            h = [torch.relu(W @ x[i, k].double() + b) for k in range(12)]
            s = [float(w @ (torch.tanh(V @ hk) * torch.sigmoid(U @ hk))) for hk in h]
            e = [math.exp(v - max(s)) for v in s]
            a = [v / sum(e) for v in e]
            z = sum(ak * hk for ak, hk in zip(a, h))
            want[i] = m.head.weight.double()[0] @ z + m.head.bias.double()[0]
            got_a = m.attention(m.embed(x[i:i + 1]))[0].double()
            assert float((got_a - torch.tensor(a, dtype=torch.float64)).abs().max()) < 1e-6
        assert float((m(x).double() - want).abs().max()) < 1e-5 and m(x).shape == (32,)
        # the pooling is a weighted mean: a bag of one instance repeated is that instance's logit
        one = x[:, :1].expand(-1, 12, -1)
        single = m.head(m.embed(x[:, 0])).squeeze(-1)
        assert torch.allclose(m(one), single, atol=1e-5)
        shuffled, perm = _shuffled_items(x)
        assert torch.allclose(m(shuffled), m(x), atol=1e-5)
        a = m.attention(m.embed(x))
        assert torch.allclose(m.attention(m.embed(shuffled)), a.gather(1, perm), atol=1e-6)
        assert torch.allclose(a.sum(-1), torch.ones(32), atol=1e-6)
    t.loss(m, x, y).backward()  # the attention is learned
    assert float(m.V.weight.grad.abs().sum()) > 0 and float(m.U.weight.grad.abs().sum()) > 0


def test_mil_bags_loss_is_the_binary_cross_entropy_to_the_noisy_bag_labels():
    Xtr, ytr, Xte, yte = tasks._digit_bags()
    t = tasks.mil_bags(0)
    x, y = next(iter(t.batches()))
    z = t.model(x).double().detach()
    want = sum(math.log1p(math.exp(-v)) if lab == 1 else math.log1p(math.exp(v))
               for v, lab in zip(z.tolist(), y[:, 0].tolist()))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want / 32) < 1e-5 and a > 0.5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the true bag labels, predicted with the flip rate's confidence, cost the flips' entropy
    oracle = lambda X: math.log(9) * (2 * {id(Xtr): ytr, id(Xte): yte}[id(X)][:, 1] - 1)  # noqa: E731
    f = float((ytr[:, 0] != ytr[:, 1]).double().mean())  # the training labels' own flip rate
    assert abs(t.train_loss(oracle) - (-f * math.log(0.1) - (1 - f) * math.log(0.9))) < 1e-9
    name, value = t.test_metric(t.model)
    want_acc = float(((t.model(Xte) > 0).double() == yte[:, 0]).double().mean())
    assert name == "test_acc" and abs(value - want_acc) < 1e-6
    assert abs(t.test_metric(oracle)[1] - float((yte[:, 0] == yte[:, 1]).double().mean())) < 1e-6
    assert t.train_loss(t.model) > 0.6 and t.steps == 374


def test_round_31_s_held_out_tasks_are_in_the_selection_of_round_32():
    for name in ("crf_tagger", "nam_additive"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _hmm_potentials(X):
    """The edge potentials of the true HMM (float64): ψ_0[i, j] = log π_j + log B[j, x_0],
    ψ_t[i, j] = log A[i, j] + log B[j, x_t]; its CRF likelihood is the HMM's posterior p(y | x)."""
    *_, (pi, A, B) = tasks._hmm_sequences()
    n, T = X.shape
    psi = torch.empty(n, T, 8, 8, dtype=torch.float64)
    logB = B.log()[:, X.long()].permute(1, 2, 0)  # (n, T, 8)
    psi[:, 0] = (pi.log() + logB[:, 0])[:, None, :]
    psi[:, 1:] = A.log() + logB[:, 1:, None, :]
    return psi


def test_crf_tagger_data_are_tagged_sequences_of_a_hidden_markov_model():
    Xtr, ytr, Xte, yte, (pi, A, B) = tasks._hmm_sequences()
    assert Xtr.shape == (6000, 24) and Xte.shape == (500, 24) and ytr.shape == (6000, 24)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.long and yte.shape == (500, 24)
    X, y = torch.cat([Xtr, Xte]), torch.cat([ytr, yte])
    assert torch.equal(X, X.round()) and float(X.min()) == 0 and float(X.max()) == 199
    assert set(y.unique().tolist()) == set(range(8))
    assert A.shape == (8, 8) and B.shape == (8, 200) and pi.shape == (8,)
    for P in (A, B, pi[None]):
        assert torch.allclose(P.sum(-1), torch.ones(len(P), dtype=P.dtype)) and bool((P > 0).all())
    # the empirical transitions and emissions match A and B
    pairs = torch.zeros(8, 8, dtype=torch.float64)
    pairs.index_put_((y[:, :-1].flatten(), y[:, 1:].flatten()), torch.ones(1, dtype=torch.float64),
                     accumulate=True)
    assert float((pairs / pairs.sum(-1, keepdim=True) - A).abs().max()) < 0.03
    emit = torch.zeros(8, 200, dtype=torch.float64)
    emit.index_put_((y.flatten(), X.long().flatten()), torch.ones(1, dtype=torch.float64),
                    accumulate=True)
    assert float((emit / emit.sum(-1, keepdim=True) - B).abs().max()) < 0.02
    # Zipf-like: the first twenty tokens over 30 % of all, the last hundred under 20 %, many rare
    counts = torch.bincount(X.long().flatten(), minlength=200)
    share = counts.double() / counts.sum()
    assert float(share[:20].sum()) > 0.3 and float(share[100:].sum()) < 0.2
    assert int((counts < 100).sum()) > 20 and int(counts.min()) > 0
    # the noise: the HMM's own posterior costs about 0.57 nats a token and its Viterbi path misses
    # about a quarter of the tags
    floor = float(tasks._crf_nll(_hmm_potentials(Xtr), ytr))
    assert 0.5 < floor < 0.65
    acc = float((tasks._viterbi(_hmm_potentials(Xte)) == yte).double().mean())
    assert 0.65 < acc < 0.8


def _paths(K, T):
    import itertools
    return list(itertools.product(range(K), repeat=T))


def _random_potentials(n=3, T=4, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, T, K, K, generator=g, dtype=torch.float64)


def _brute_score(psi, path):
    return float(psi[0, 0, path[0]]) + sum(float(psi[t, path[t - 1], path[t]])
                                           for t in range(1, len(path)))


def test_crf_forward_algorithm_and_nll_against_all_tag_paths():
    psi = _random_potentials()
    n, T, K, _ = psi.shape
    logZ = tasks._crf_log_partition(psi)
    y = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0], [1, 0, 1, 2]])
    for i in range(n):
        scores = [_brute_score(psi[i], p) for p in _paths(K, T)]
        want = math.log(sum(math.exp(v) for v in scores))
        assert abs(float(logZ[i]) - want) < 1e-12
        gold = float(tasks._crf_path_score(psi, y)[i])
        assert abs(gold - _brute_score(psi[i], y[i].tolist())) < 1e-12
    # the NLL: −log p(y | x) of each sequence over its length, the mean; ≥ 0, and near 0 when
    # the true path holds nearly all the mass
    want = sum(float(logZ[i]) - _brute_score(psi[i], y[i].tolist()) for i in range(n)) / (n * T)
    got = float(tasks._crf_nll(psi, y))
    assert abs(got - want) < 1e-12 and got > 0
    for i in range(n):
        assert float(tasks._crf_nll(psi[i:i + 1], y[i:i + 1])) >= 0
    sharp = psi.clone()
    for i in range(n):
        for t in range(T):
            sharp[i, t, :, y[i, t]] += 50.0
    assert 0 <= float(tasks._crf_nll(sharp, y)) < 1e-6
    # the probabilities of all the paths sum to 1
    total = sum(math.exp(_brute_score(psi[0], p) - float(logZ[0])) for p in _paths(K, T))
    assert abs(total - 1) < 1e-12


def test_viterbi_is_the_brute_force_best_path():
    for seed in range(4):
        psi = _random_potentials(n=5, T=4, K=3, seed=seed)
        got = tasks._viterbi(psi)
        assert got.shape == (5, 4) and got.dtype == torch.long
        for i in range(5):
            best = max(_paths(3, 4), key=lambda p: _brute_score(psi[i], p))
            assert got[i].tolist() == list(best)
    # five tags, length 5 as well
    psi = _random_potentials(n=2, T=5, K=5, seed=9)
    for i, row in enumerate(tasks._viterbi(psi).tolist()):
        assert row == list(max(_paths(5, 5), key=lambda p: _brute_score(psi[i], p)))


def test_crf_tagger_potentials_are_transitions_plus_windowed_emissions_by_hand():
    t = tasks.crf_tagger(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 24) and y.shape == (32, 24) and x.dtype == torch.float32
    with torch.no_grad():
        m.trans.copy_(torch.randn(8, 8))  # started at 0: make them tell apart
        m.start.copy_(torch.randn(8))
        m.end.copy_(torch.randn(8))
        E = m.embed.weight.double()
        W, b = m.conv.weight.double(), m.conv.bias.double()
        assert E.shape == (200, 16) and W.shape == (32, 16, 5)
        e = torch.zeros(32, 24, 8, dtype=torch.float64)
        for i in range(4):  # a few rows by explicit sums over the window
            for s in range(24):
                h = b.clone()
                for k in range(5):  # tap k reads the token s + k − 2 (zeros beyond the ends)
                    if 0 <= s + k - 2 < 24:
                        h += W[:, :, k] @ E[int(x[i, s + k - 2])]
                e[i, s] = m.out.weight.double() @ torch.relu(h) + m.out.bias.double()
        got = m.emissions(x).double()
        assert float((got[:4] - e[:4]).abs().max()) < 1e-5
        psi = m(x).double()
        assert psi.shape == (32, 24, 8, 8)
        Tm, s0, f = m.trans.double(), m.start.double(), m.end.double()
        for i in range(4):
            for step in range(24):
                want = Tm + e[i, step][None, :] if step else (s0 + e[i, 0])[None, :].expand(8, 8)
                if step == 23:
                    want = want + f[None, :]
                assert float((psi[i, step] - want).abs().max()) < 1e-5
        # the emissions read a window of five tokens: a change at step 10 moves steps 8–12 only
        x2 = x.clone()
        x2[:, 10] = (x2[:, 10] + 1) % 200
        diff = (m.emissions(x2) - m.emissions(x)).abs().amax((0, 2))
        assert float(diff[:8].sum()) == 0 and float(diff[13:].sum()) == 0
        assert bool((diff[8:13] > 0).all())
    t.loss(m, x, y).backward()  # the transitions, start and end scores are learned
    for p in (m.trans, m.start, m.end):
        assert float(p.grad.abs().sum()) > 0


def test_crf_tagger_loss_is_the_crf_nll_per_token_and_its_test_metric_the_viterbi_accuracy():
    Xtr, ytr, Xte, yte, _ = tasks._hmm_sequences()
    t = tasks.crf_tagger(0)
    x, y = next(iter(t.batches()))
    psi = t.model(x).double().detach()
    want = 0.0
    for i in range(32):  # the forward algorithm by hand, in float64, over Python floats
        alpha = [float(psi[i, 0, 0, j]) for j in range(8)]
        for s in range(1, 24):
            alpha = [math.log(sum(math.exp(alpha[k] + float(psi[i, s, k, j])) for k in range(8)))
                     for j in range(8)]
        logZ = math.log(sum(math.exp(v) for v in alpha))
        want += logZ - _brute_score(psi[i], y[i].tolist())
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want / (32 * 24)) < 1e-5 and a > 1.5  # about log 8 at the start
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the true HMM's potentials reach the floor, about 0.57
    assert 0.5 < t.train_loss(_hmm_potentials) < 0.65
    name, value = t.test_metric(t.model)
    want_acc = float((tasks._viterbi(t.model(Xte)) == yte).double().mean())
    assert name == "test_token_acc" and abs(value - want_acc) < 1e-12 and value < 0.3
    oracle_acc = t.test_metric(_hmm_potentials)[1]
    assert 0.65 < oracle_acc < 0.8
    assert t.train_loss(t.model) > 2 and t.steps == 187


def test_nam_additive_data_are_a_noisy_sum_of_shape_functions_of_single_features():
    Xtr, ytr, Xte, yte = tasks._additive_data()
    assert Xtr.shape == (2000, 8) and Xte.shape == (500, 8) and ytr.shape == (2000, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 2)
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    assert float(X.min()) >= -1 and float(X.max()) <= 1 and abs(float(X.mean())) < 0.02
    # the shape functions by hand
    def f(v):
        x1, x2, x3, x4, x5, _, x7, x8 = v
        return ((1.0 if x1 > 0.2 else 0.0) + math.exp(-(x2 - 0.3) ** 2 / (2 * 0.15 ** 2))
                + math.sin(3 * math.pi * x3) + x4 ** 2 + abs(x5 + 0.4)
                + (math.sin(4 * math.pi * x7) if x7 > 0 else 0.0) + x8)
    raw = torch.tensor([f(v) for v in X.tolist()], dtype=torch.float64)
    clean = (raw - raw.mean()) / raw.std()
    assert float((clean - y[:, 1]).abs().max()) < 1e-9
    assert abs(float(y[:, 1].mean())) < 1e-9 and abs(float(y[:, 1].std()) - 1) < 1e-9
    noise = y[:, 0] - y[:, 1]
    assert abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.015
    assert abs(float(torch.corrcoef(torch.stack([noise, X[:, 0]]))[0, 1])) < 0.1


def test_nam_additive_output_is_the_sum_of_per_feature_networks_plus_a_bias():
    t = tasks.nam_additive(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 8) and y.shape == (32, 2) and len(m.nets) == 8
    with torch.no_grad():
        m.bias.fill_(0.7)
        contrib = torch.zeros(32, 8, dtype=torch.float64)
        for j, net in enumerate(m.nets):
            W1, b1 = net[0].weight.double(), net[0].bias.double()
            W2, b2 = net[2].weight.double(), net[2].bias.double()
            W3 = net[4].weight.double()
            assert W1.shape == (32, 1) and W2.shape == (32, 32) and W3.shape == (1, 32)
            assert net[4].bias is None
            h = torch.relu(x[:, j:j + 1].double() @ W1.T + b1)
            contrib[:, j] = (torch.relu(h @ W2.T + b2) @ W3.T)[:, 0]
        assert float((m.features(x).double() - contrib).abs().max()) < 1e-5
        assert float((m(x).double() - (contrib.sum(-1) + 0.7)).abs().max()) < 1e-5
        assert m(x).shape == (32,)
        # each feature's contribution depends on its own feature only
        for j in range(8):
            x2 = x.clone()
            x2[:, j] = -x2[:, j] + 0.1
            diff = (m.features(x2) - m.features(x)).abs().amax(0)
            assert float(diff[j]) > 0
            assert float(torch.cat([diff[:j], diff[j + 1:]]).abs().max()) == 0
    t.loss(m, x, y).backward()
    assert all(float(net[0].weight.grad.abs().sum()) > 0 for net in m.nets)
    assert float(m.bias.grad.abs()) > 0


def test_nam_additive_loss_is_the_mse_to_the_noisy_targets():
    Xtr, ytr, Xte, yte = tasks._additive_data()
    t = tasks.nam_additive(0)
    x, y = next(iter(t.batches()))
    p = t.model(x).double().detach()
    want = sum((p[i] - y[i, 0]) ** 2 for i in range(32))
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - float(want) / 32) < 1e-5 and a > 0.3
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the noise-free target reads the noise's own cost, about 0.09
    oracle = lambda X: {id(Xtr): ytr, id(Xte): yte}[id(X)][:, 1]  # noqa: E731
    assert 0.085 < t.train_loss(oracle) < 0.1 and 0.075 < t.test_metric(oracle)[1] < 0.1
    name, value = t.test_metric(t.model)
    want_te = float(((t.model(Xte).double() - yte[:, 0]) ** 2).mean())
    assert name == "test_mse" and abs(value - want_te) < 1e-5
    assert t.train_loss(t.model) > 0.5 and t.steps == 372


def test_round_32_s_held_out_tasks_are_in_the_selection_of_round_33():
    for name in ("soft_trees", "kg_distmult"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _tree_class_by_hand(v):
    """The class of one point (a list of 12 floats) by the decision tree of ``_tree_rule``."""
    if v[0] > 0.25:
        return 0 if v[1] > -0.2 else (1 if v[2] > 0.3 else 2)
    return 3 if v[3] + v[4] > 0 else (1 if v[5] < -0.4 else 2)


def test_soft_trees_data_are_a_decision_tree_s_classes_with_a_fifth_of_the_labels_redrawn():
    Xtr, ytr, Xte, yte = tasks._tree_table()
    assert Xtr.shape == (3000, 12) and Xte.shape == (500, 12) and ytr.shape == (3000, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.long and yte.shape == (500, 2)
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    assert float(X.min()) >= -1 and float(X.max()) <= 1 and float(X.abs().mean(0).min()) > 0.45
    assert abs(float(X.mean())) < 0.02
    # the class by hand, from the six features that matter
    assert [_tree_class_by_hand(v) for v in X.tolist()] == y[:, 1].tolist()
    share = torch.bincount(y[:, 1], minlength=4).double() / len(y)
    assert float(share.min()) > 0.1 and set(y[:, 0].unique().tolist()) == {0, 1, 2, 3}
    # the noise: a label differs from its class with probability 0.2 · 3/4 = 0.15, uniformly
    # among the three other classes, as often where x_0 > 0.25 as where not
    wrong = y[:, 0] != y[:, 1]
    assert abs(float(wrong.double().mean()) - 0.15) < 0.02
    shift = torch.bincount((y[wrong, 0] - y[wrong, 1]) % 4, minlength=4).double() / int(wrong.sum())
    assert float(shift[0]) == 0 and float((shift[1:] - 1 / 3).abs().max()) < 0.06
    high = X[:, 0] > 0.25
    assert abs(float(wrong[high].double().mean()) - float(wrong[~high].double().mean())) < 0.04
    # the floor: the labels' own distribution, 0.85 on the class and 0.05 on each other one
    want = -0.85 * math.log(0.85) - 3 * 0.05 * math.log(0.05)
    assert abs(tasks._tree_noise_floor() - want) < 1e-12 and 0.58 < want < 0.59


def test_soft_trees_output_is_the_sum_over_trees_of_leaf_probability_weighted_logits_by_hand():
    t = tasks.soft_trees(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 12) and y.shape == (32, 2) and x.dtype == torch.float32
    assert m.select.shape == (8, 3, 12) and m.threshold.shape == (8, 3)
    assert m.log_temp.shape == (8, 3) and m.leaves.shape == (8, 8, 4)
    with torch.no_grad():
        m.log_temp.copy_(torch.randn(8, 3))  # started all at log 2: make them tell apart
        A, b, kappa, V = (p.double().tolist()
                          for p in (m.select, m.threshold, m.log_temp, m.leaves))
        for i in range(4):  # a few rows by explicit sums and products
            xi = x[i].double().tolist()
            out, probs = [0.0] * 4, []
            for tree in range(8):
                s = []
                for d in range(3):
                    z = sum(math.exp(a) for a in A[tree][d])
                    f = sum(math.exp(a) / z * v for a, v in zip(A[tree][d], xi))
                    s.append(1 / (1 + math.exp(-math.exp(kappa[tree][d]) * (f - b[tree][d]))))
                row = []
                for leaf in range(8):  # leaf (l_0 l_1 l_2) in binary, l_0 the first level's bit
                    p = 1.0
                    for d in range(3):
                        p *= s[d] if (leaf >> (2 - d)) & 1 else 1 - s[d]
                    row.append(p)
                    for k in range(4):
                        out[k] += p * V[tree][leaf][k]
                probs.append(row)
            probs, out = (torch.tensor(v, dtype=torch.float64) for v in (probs, out))
            assert float((m.leaf_probs(x[i:i + 1])[0].double() - probs).abs().max()) < 1e-6
            assert float((m(x[i:i + 1])[0].double() - out).abs().max()) < 1e-5
        assert m(x).shape == (32, 4)
        assert float((m.leaf_probs(x).double().sum(-1) - 1).abs().max()) < 1e-6
    t.loss(m, x, y).backward()  # every part is learned
    for p in (m.select, m.threshold, m.log_temp, m.leaves):
        assert float(p.grad.abs().sum()) > 0
    with torch.no_grad():
        # a sharp, one-feature split at every level makes the trees hard: each point in one leaf
        m.select.copy_(torch.full((8, 3, 12), -30.0))
        m.select[:, 0, 0] = m.select[:, 1, 1] = m.select[:, 2, 2] = 30.0
        m.threshold.copy_(torch.tensor([0.25, -0.2, 0.3]).expand(8, 3))
        m.log_temp.fill_(math.log(1e4))
        leaf = (4 * (x[:, 0] > 0.25) + 2 * (x[:, 1] > -0.2) + (x[:, 2] > 0.3)).long()
        assert torch.equal(m.leaf_probs(x).argmax(-1), leaf[:, None].expand(32, 8))
        assert float(m.leaf_probs(x).amax(-1).min()) > 0.99


def test_soft_trees_loss_is_the_cross_entropy_to_the_noisy_labels_and_its_metric_the_accuracy():
    Xtr, ytr, Xte, yte = tasks._tree_table()
    t = tasks.soft_trees(0)
    x, y = next(iter(t.batches()))
    want = _ce_by_hand(t.model(x).double().detach().tolist(), y[:, 0].tolist())
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want) < 1e-5 and a > 1.2  # about log 4 at the start
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the oracle, the labels' true distribution (0.85 on the class, 0.05 on each other), reads
    # the floor on the training labels' own flips
    oracle = lambda X: torch.where(  # noqa: E731
        F.one_hot({id(Xtr): ytr, id(Xte): yte}[id(X)][:, 1], 4) == 1, math.log(0.85),
        math.log(0.05))
    f = float((ytr[:, 0] != ytr[:, 1]).double().mean())
    assert abs(t.train_loss(oracle) - (-(1 - f) * math.log(0.85) - f * math.log(0.05))) < 1e-9
    assert 0.54 < t.train_loss(oracle) < 0.6
    name, value = t.test_metric(t.model)
    want_acc = sum(int(r.argmax()) == int(yte[i, 0]) for i, r in enumerate(t.model(Xte))) / 500
    assert name == "test_acc" and abs(value - want_acc) < 1e-6 and value < 0.5
    assert abs(t.test_metric(oracle)[1] - float((yte[:, 0] == yte[:, 1]).double().mean())) < 1e-6
    assert 0.82 < t.test_metric(oracle)[1] < 0.88
    assert t.train_loss(t.model) > 1.2 and t.steps == 372


def test_kg_distmult_data_are_triples_with_tails_drawn_from_a_known_distmult_model():
    Xtr, ytr, Xte, yte, P = tasks._knowledge_graph()
    assert Xtr.shape == (7000, 2) and Xte.shape == (1000, 2) and ytr.shape == (7000,)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.long and yte.shape == (1000,)
    assert P.shape == (6, 200, 200) and P.dtype == torch.float64
    X, y = torch.cat([Xtr, Xte]), torch.cat([ytr, yte])
    h, r = X[:, 0].long(), X[:, 1].long()
    assert torch.equal(X, X.round()) and set(r.tolist()) == set(range(6))
    assert set(h.tolist()) == set(range(200)) and set(y.tolist()) == set(range(200))
    assert torch.allclose(P.sum(-1), torch.ones(6, 200, dtype=torch.float64))
    assert bool((P > 0).all())
    # P is a DistMult softmax: the true vectors (the generator's first draws) by hand, a few rows
    g = torch.Generator().manual_seed(2055)
    a = torch.randn(200, 8, generator=g, dtype=torch.float64).tolist()
    c = torch.randn(6, 8, generator=g, dtype=torch.float64).tolist()
    for rel, head in ((0, 3), (2, 77), (5, 199)):
        score = [sum(a[head][k] * c[rel][k] * a[tail][k] for k in range(8)) / math.sqrt(8)
                 for tail in range(200)]
        z = sum(math.exp(v / tasks._KG_TEMPS[rel]) for v in score)
        want = torch.tensor([math.exp(v / tasks._KG_TEMPS[rel]) / z for v in score],
                            dtype=torch.float64)
        assert float((P[rel, head] - want).abs().max()) < 1e-12
    # the drawn tails follow P: the probability of the drawn tail is on average Σ_t p², the
    # mode is drawn as often as its mass, and the tail lies among the five likeliest as often
    Pr = P[r, h]
    assert abs(float(Pr.gather(1, y[:, None]).mean()) - float((Pr ** 2).sum(-1).mean())) < 0.01
    assert abs(float((Pr.argmax(-1) == y).double().mean()) - float(Pr.max(-1).values.mean())) < 0.02
    top5 = Pr.sort(-1, descending=True).values[:, :5].sum(-1)
    rank = (Pr >= Pr.gather(1, y[:, None])).sum(-1)
    assert abs(float((rank <= 5).double().mean()) - float(top5.mean())) < 0.02
    # the floor: the entropy of p(t | h, r), about 2.2 nats over the training triples, from a
    # near-functional relation (τ 0.06) to diffuse ones (τ 0.4 and 0.7)
    htr, rtr = Xtr[:, 0].long(), Xtr[:, 1].long()
    Ptr = P[rtr, htr]
    H = -(Ptr * Ptr.log()).sum(-1)
    assert 2.1 < float(H.mean()) < 2.3
    per = [float(H[rtr == k].mean()) for k in range(6)]
    assert per == sorted(per) and per[0] < 0.3 and per[-1] > 4
    nll = -Ptr.gather(1, ytr[:, None]).log()[:, 0]
    for k in range(6):  # the oracle's cross-entropy on each relation's drawn tails near its entropy
        assert abs(float(nll[rtr == k].mean()) - per[k]) < 0.1


def test_kg_distmult_logits_are_trilinear_scores_of_every_entity_as_the_tail_by_hand():
    t = tasks.kg_distmult(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 2) and y.shape == (32,) and x.dtype == torch.float32
    assert m.ent.shape == (200, 32) and m.rel.shape == (6, 32)
    E, W = m.ent.double().tolist(), m.rel.double().tolist()
    with torch.no_grad():
        got = m(x).double()
        assert got.shape == (32, 200)
        for i in range(3):  # a few rows by explicit sums
            h, r = int(x[i, 0]), int(x[i, 1])
            want = [sum(E[h][k] * W[r][k] * E[tail][k] for k in range(32)) for tail in range(200)]
            assert float((got[i] - torch.tensor(want, dtype=torch.float64)).abs().max()) < 1e-5
        # DistMult is symmetric: the score of (h, r, t) is that of (t, r, h)
        swapped = torch.stack([y.float(), x[:, 1]], -1)
        assert float((m(swapped).gather(1, x[:, :1].long()) - got.gather(1, y[:, None])).abs().max()
                     ) < 1e-5
    t.loss(m, x, y).backward()
    assert float(m.ent.grad.abs().sum()) > 0 and float(m.rel.grad.abs().sum()) > 0
    assert int((m.ent.grad.abs().sum(-1) > 0).sum()) == 200  # every entity scored as a tail


def test_kg_distmult_loss_is_the_softmax_cross_entropy_over_all_tails_and_its_metric_the_raw_mrr():
    Xtr, ytr, Xte, yte, P = tasks._knowledge_graph()
    t = tasks.kg_distmult(0)
    x, y = next(iter(t.batches()))
    want = _ce_by_hand(t.model(x).double().detach().tolist(), y.tolist())
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - want) < 1e-5 and a > 5  # about log 200 at the start
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the oracle, the true p(t | h, r) as a model, reads the floor, about 2.2
    oracle = lambda X: P[X[:, 1].long(), X[:, 0].long()].log()  # noqa: E731
    want = float(-P[Xtr[:, 1].long(), Xtr[:, 0].long(), ytr].log().mean())
    assert abs(t.train_loss(oracle) - want) < 1e-9 and 2.1 < want < 2.3
    # the raw mean reciprocal rank by hand, ties counted against the true tail
    name, value = t.test_metric(t.model)
    scores = t.model(Xte).double().detach().tolist()
    ranks = [sum(v >= row[int(yte[i])] for v in row) for i, row in enumerate(scores)]
    assert name == "test_mrr" and abs(value - sum(1 / k for k in ranks) / 1000) < 1e-12
    assert value < 0.1
    assert t.test_metric(lambda X: torch.zeros(len(X), 200))[1] == pytest.approx(1 / 200)
    assert t.test_metric(lambda X: F.one_hot(yte, 200).double())[1] == 1
    assert 0.55 < t.test_metric(oracle)[1] < 0.62
    assert t.train_loss(t.model) > 5 and t.steps == 436


def test_round_33_s_held_out_tasks_are_in_the_selection_of_round_34():
    for name in ("lora_adapt", "tpp_rmtpp"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _tanh_net_by_hand(v, layers, W3, b3):
    """One point's output (a list of 4) through tanh layers (W, b) and a linear readout, by
    explicit sums over lists of floats."""
    for W, b in layers:
        v = [math.tanh(sum(wk * vk for wk, vk in zip(row, v)) + bi) for row, bi in zip(W, b)]
    return [sum(wk * vk for wk, vk in zip(row, v)) + bi for row, bi in zip(W3, b3)]


def test_lora_adapt_data_are_a_noisy_base_network_changed_by_rank_4_deltas_on_its_hidden_layers():
    Xtr, ytr, Xte, yte, base, deltas = tasks._lora_data()
    assert Xtr.shape == (2000, 16) and Xte.shape == (500, 16) and ytr.shape == (2000, 4, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 4, 2)
    (W1, b1), (W2, b2), (W3, b3) = base
    # the seed's draws by hand, in order: the base, the changes' factors, x, the noise
    g = torch.Generator().manual_seed(2056)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    f32 = lambda v: v.float().double()  # noqa: E731
    assert torch.equal(W1, f32(0.375 * r(64, 16))) and torch.equal(b1, f32(0.1 * r(64)))
    assert torch.equal(W2, f32(0.1875 * r(64, 64))) and torch.equal(b2, f32(0.1 * r(64)))
    W3_drawn = r(4, 64) / 8
    for W, D, fan_in in ((W1, deltas[0], 16), (W2, deltas[1], 64)):
        UV = r(64, 4) @ r(4, fan_in)
        assert float((D - 0.5 * UV * W.norm() / UV.norm()).abs().max()) < 1e-14
        s = torch.linalg.svdvals(D)
        assert float(s[4] / s[0]) < 1e-12 and float(s[3] / s[0]) > 0.05  # rank 4 exactly
        assert abs(float(D.norm() / W.norm()) - 0.5) < 1e-12
    X = torch.cat([Xtr, Xte]).double()
    assert torch.equal(X, f32(r(2500, 16)))
    # the readout: scaled so that the changed network's outputs, each centred, have unit spread
    changed = [(W1 + deltas[0], b1), (W2 + deltas[1], b2)]
    raw = tasks._tanh_layers(X, changed) @ W3_drawn.T
    sd = float((raw - raw.mean(0)).std())
    assert torch.equal(W3, f32(W3_drawn / sd)) and torch.equal(b3, f32(-raw.mean(0) / sd))
    y = torch.cat([ytr, yte])
    assert float(y[..., 1].mean(0).abs().max()) < 1e-6 and abs(float(y[..., 1].std()) - 1) < 1e-6
    # g by hand, a few points by explicit sums
    rows = [[W.tolist(), b.tolist()] for W, b in changed]
    for i in (0, 1, 2222):
        want = _tanh_net_by_hand(X[i].tolist(), rows, W3.tolist(), b3.tolist())
        assert float((y[i, :, 1] - torch.tensor(want, dtype=torch.float64)).abs().max()) < 1e-12
    # the noise: the next draws, N(0, 0.3²), apart from x and g; it alone costs 0.09
    noise = y[..., 0] - y[..., 1]
    assert float((noise - 0.3 * r(2500, 4)).abs().max()) < 1e-12
    assert float((noise.std(0) - 0.3).abs().max()) < 0.01 and float(noise.mean().abs()) < 0.01
    corr = torch.corrcoef(torch.stack([noise.flatten(), y[..., 1].flatten()]))[0, 1]
    assert abs(float(corr)) < 0.05
    assert 0.085 < float((noise[:2000] ** 2).mean()) < 0.095
    # the change matters: the base alone is far from g, much farther than the noise
    base_out = tasks._tanh_layers(X, [(W1, b1), (W2, b2)]) @ W3.T + b3
    assert 0.5 < float(((base_out - y[..., 1]) ** 2).mean()) < 0.7


def test_lora_adapt_trains_only_rank_4_adapters_on_the_frozen_base_by_hand():
    Xtr, ytr, Xte, yte, base, deltas = tasks._lora_data()
    t = tasks.lora_adapt(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 16) and y.shape == (32, 4, 2) and x.dtype == torch.float32
    # only the adapters are parameters; the base is a buffer, never trained
    assert [n for n, _ in m.named_parameters()] == ["A1", "B1", "A2", "B2"]
    assert m.A1.shape == (4, 16) and m.B1.shape == (64, 4) and m.A2.shape == (4, 64)
    assert m.B2.shape == (64, 4) and sum(p.numel() for p in m.parameters()) == 832
    A1, B1, A2, B2 = (p.detach() for p in m.parameters())
    assert float(B1.abs().max()) == 0 == float(B2.abs().max())
    assert float(A1.abs().max()) <= 0.25 and float(A2.abs().max()) <= 0.125
    assert float(A1.abs().max()) > 0.2  # uniform on ±1/√16, not a smaller start
    buffers = dict(m.named_buffers())
    assert sorted(buffers) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    for name, v in zip(("W1", "b1", "W2", "b2", "W3", "b3"), (p for layer in base for p in layer)):
        assert buffers[name].dtype == torch.float32 and not buffers[name].requires_grad
        assert torch.equal(buffers[name].double(), v)
    with torch.no_grad():
        # with B = 0 the model is the base network
        base_out = tasks._tanh_layers(x.double(), base[:2]) @ base[2][0].T + base[2][1]
        assert float((m(x).double() - base_out).abs().max()) < 1e-5
        # with adapters, each hidden layer reads W + 2·B A; a few rows by explicit sums
        for p in m.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
        layers = [[(W + 2 * B.double() @ A.double()).tolist(), b.tolist()]
                  for (W, b), A, B in zip(base[:2], (m.A1, m.A2), (m.B1, m.B2))]
        got = m(x).double()
        for i in range(3):
            want = _tanh_net_by_hand(x[i].double().tolist(), layers, base[2][0].tolist(),
                                     base[2][1].tolist())
            assert float((got[i] - torch.tensor(want, dtype=torch.float64)).abs().max()) < 1e-5
        assert float((got - base_out).abs().max()) > 0.1
        # adapters with 2·B_l A_l = Δ_l (from Δ_l's SVD) give g, the noise-free target: the
        # adapters can reach the floor, the noise's own cost
        for D, A, B in zip(deltas, (m.A1, m.A2), (m.B1, m.B2)):
            U, s, Vh = torch.linalg.svd(D)
            B.copy_(U[:, :4] * s[:4] / 2)
            A.copy_(Vh[:4])
        assert float((m(Xtr).double() - ytr[..., 1]).abs().max()) < 1e-4
        noise = float(((ytr[..., 0] - ytr[..., 1]) ** 2).mean())
        assert abs(t.train_loss(m) - noise) < 1e-5 and 0.085 < noise < 0.095
    # LoRA's start: B = 0, so A gets no gradient on the first step and B does
    t = tasks.lora_adapt(0)
    t.loss(t.model, x, y).backward()
    assert float(t.model.A1.grad.abs().max()) == 0 == float(t.model.A2.grad.abs().max())
    assert float(t.model.B1.grad.abs().sum()) > 0 and float(t.model.B2.grad.abs().sum()) > 0
    # every seed adapts the same frozen base from its own A
    t1 = tasks.lora_adapt(1)
    for (name, v), v1 in zip(t.model.named_buffers(), t1.model.buffers()):
        assert torch.equal(v, v1), name
    assert not torch.equal(t.model.A1, t1.model.A1)


def test_lora_adapt_loss_is_the_mse_to_the_noisy_targets():
    Xtr, ytr, Xte, yte, _, _ = tasks._lora_data()
    t = tasks.lora_adapt(0)
    assert _assert_batch_and_test_mse_by_hand(t, 4, Xte, yte) > 0.3
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the noise-free target reads the noise's own cost, about 0.09
    oracle = lambda X: {id(Xtr): ytr, id(Xte): yte}[id(X)][..., 1]  # noqa: E731
    assert 0.088 < t.train_loss(oracle) < 0.093 and 0.085 < t.test_metric(oracle)[1] < 0.09
    assert 0.6 < t.train_loss(t.model) < 0.7 and t.steps == 372  # the base's own loss


def _tpp_teacher_by_hand():
    """The teacher's weights by hand: the data's seed's first draws, in order."""
    g = torch.Generator().manual_seed(2058)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    gru = (2 / math.sqrt(10) * r(48, 10), 0.75 * r(48, 16), 0.1 * r(48), 0.1 * r(48))
    return gru, 0.625 * r(16), 2 * r(8, 16)


def _tpp_teacher_forced(y):
    """The teacher's a and mark logits before each event of the sequences y, by torch's GRUCell
    (not the data's own ``_gru_cell``) loaded with the teacher's weights. (n, L), (n, L, 8)"""
    (Wi, Wh, bi, bh), v, U = _tpp_teacher_by_hand()
    cell = torch.nn.GRUCell(10, 16).double()
    with torch.no_grad():
        for p, w in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh),
                        (Wi, Wh, bi, bh)):
            p.copy_(w)
        h, a, logits = torch.zeros(len(y), 16, dtype=torch.float64), [], []
        for j in range(y.shape[1]):
            a.append(h @ v)
            logits.append(h @ U.T)
            tau, mark = y[:, j, 0], y[:, j, 1].long()
            h = cell(torch.cat([F.one_hot(mark, 8).double(), tau[:, None], tau.log()[:, None]],
                               -1), h)
    return torch.stack(a, 1), torch.stack(logits, 1)


def test_tpp_rmtpp_data_are_event_sequences_of_a_known_rmtpp_teacher():
    Xtr, ytr, Xte, yte, teacher = tasks._tpp_sequences()
    assert Xtr.shape == (2000, 32, 2) and Xte.shape == (500, 32, 2) and ytr.shape == (2000, 32, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 32, 2)
    assert torch.equal(Xtr.double(), ytr) and torch.equal(Xte.double(), yte)  # gaps in float32
    y = torch.cat([ytr, yte])
    tau, mark = y[..., 0], y[..., 1]
    assert float(tau.min()) > 0 and torch.equal(mark, mark.round())
    assert set(mark.long().unique().tolist()) == set(range(8))
    # the teacher's weights are the seed's first draws; ``_gru_cell`` is torch's GRU cell
    gru, v, U = _tpp_teacher_by_hand()
    assert all(torch.equal(p, q) for p, q in zip(teacher["gru"], gru))
    assert torch.equal(teacher["v"], v) and torch.equal(teacher["U"], U)
    cell = torch.nn.GRUCell(10, 16).double()
    with torch.no_grad():
        for p, w in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), gru):
            p.copy_(w)
        xs, hs = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
        assert float((tasks._gru_cell(xs, hs, *gru) - cell(xs, hs)).abs().max()) < 1e-12
    # time rescaling: the teacher's compensator over each gap, e^a (e^{0.5 τ} − 1)/0.5, is
    # Exp(1) whatever the state, so the gaps are the teacher's
    a, logits = _tpp_teacher_forced(y)
    comp = a.exp() * torch.expm1(0.5 * tau) / 0.5
    assert abs(float(comp.mean()) - 1) < 0.02 and abs(float(comp.var()) - 1) < 0.05
    for c in (0.5, 1, 3):
        assert abs(float((comp > c).double().mean()) - math.exp(-c)) < 0.01
    high = a > a.median()
    assert abs(float(comp[high].mean()) - float(comp[~high].mean())) < 0.03
    assert float(a.std()) > 0.5  # the rate varies with the history
    # the marks follow the teacher's probabilities: the drawn mark's probability averages Σ p²,
    # the likeliest mark is drawn as often as its mass
    p = torch.softmax(logits, -1)
    drawn = p.gather(-1, mark.long()[..., None])[..., 0]
    assert abs(float(drawn.mean()) - float((p ** 2).sum(-1).mean())) < 0.01
    assert abs(float((p.argmax(-1) == mark).double().mean()) - float(p.amax(-1).mean())) < 0.01
    # the floor, the teacher's NLL, from the same pieces: 1.16 nats an event, against about 2.35
    # for a Poisson process with the marks' frequencies
    nll = -(a + 0.5 * tau - comp) - torch.log_softmax(logits, -1).gather(
        -1, mark.long()[..., None])[..., 0]
    floor = tasks._tpp_teacher_nll(teacher, ytr)
    assert float((floor - nll[:2000].mean(1)).abs().max()) < 1e-9
    assert 1.1 < float(floor.mean()) < 1.25
    rate = 1 / float(ytr[..., 0].mean())
    freq = torch.bincount(ytr[..., 1].long().flatten(), minlength=8).double() / 64000
    poisson = float((rate * ytr[..., 0] - math.log(rate)).mean()
                    - freq[ytr[..., 1].long()].log().mean())
    assert 2.2 < poisson < 2.5


def test_tpp_rmtpp_model_is_a_gru_over_the_events_with_an_exponential_intensity_by_hand():
    t = tasks.tpp_rmtpp(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 32, 2) and y.shape == (32, 32, 2) and x.dtype == torch.float32
    assert m.embed.weight.shape == (8, 8) and m.gru.weight_ih_l0.shape == (96, 10)
    assert m.gru.weight_hh_l0.shape == (96, 32) and m.time.weight.shape == (1, 32)
    assert m.mark.weight.shape == (8, 32) and float(m.w.detach()) == pytest.approx(0.1)
    E = m.embed.weight.double().tolist()
    Wi, Wh = m.gru.weight_ih_l0.double().tolist(), m.gru.weight_hh_l0.double().tolist()
    bi, bh = m.gru.bias_ih_l0.double().tolist(), m.gru.bias_hh_l0.double().tolist()
    v, b = m.time.weight.double()[0].tolist(), float(m.time.bias.detach())
    M, mb = m.mark.weight.double().tolist(), m.mark.bias.double().tolist()
    sig = lambda u: 1 / (1 + math.exp(-u))  # noqa: E731
    dot = lambda p, q: sum(pk * qk for pk, qk in zip(p, q))  # noqa: E731
    with torch.no_grad():
        out = m(x).double()
        assert out.shape == (32, 32, 10)
        for i in range(2):  # two sequences by explicit sums: h_0 = 0, then a GRU step per event
            h = [0.0] * 32
            for j in range(32):
                assert abs(float(out[i, j, 0]) - (dot(v, h) + b)) < 1e-5
                assert float(out[i, j, 1]) == float(m.w.detach())
                want = torch.tensor([dot(row, h) + c for row, c in zip(M, mb)],
                                    dtype=torch.float64)
                assert float((out[i, j, 2:] - want).abs().max()) < 1e-5
                tau, mark = float(x[i, j, 0]), int(x[i, j, 1])
                inp = E[mark] + [tau, math.log(tau)]
                gi = [dot(row, inp) + c for row, c in zip(Wi, bi)]
                gh = [dot(row, h) + c for row, c in zip(Wh, bh)]
                r = [sig(gi[k] + gh[k]) for k in range(32)]
                z = [sig(gi[32 + k] + gh[32 + k]) for k in range(32)]
                n = [math.tanh(gi[64 + k] + r[k] * gh[64 + k]) for k in range(32)]
                h = [(1 - z[k]) * n[k] + z[k] * h[k] for k in range(32)]
        # each event's outputs read only the events before it
        x2 = x.clone()
        x2[:, 10, 0] *= 3
        x2[:, 10, 1] = (x2[:, 10, 1] + 1) % 8
        out2 = m(x2).double()
        assert torch.equal(out2[:, :11], out[:, :11])
        assert float((out2[:, 11, 0] - out[:, 11, 0]).abs().min()) > 0
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name


class _TPPTeacher(torch.nn.Module):
    """The teacher as a model: its a, w = 0.5 and mark logits before each event of X."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, X):
        a, logits = _tpp_teacher_forced(X.double())
        return torch.cat([a[..., None], torch.full_like(a[..., None], 0.5), logits], -1)


def test_tpp_rmtpp_loss_is_the_exact_nll_per_event_and_the_teacher_reads_the_floor():
    Xtr, ytr, Xte, yte, teacher = tasks._tpp_sequences()
    t = tasks.tpp_rmtpp(0)
    x, y = next(iter(t.batches()))
    out = t.model(x).double().detach().tolist()
    total = 0.0
    for i in range(32):  # log f(τ) = a + wτ − e^a (e^{wτ} − 1)/w, plus the mark's log-softmax
        for j in range(32):
            a, w, logits = out[i][j][0], out[i][j][1], out[i][j][2:]
            tau, mark = float(y[i, j, 0]), int(y[i, j, 1])
            total += a + w * tau - math.exp(a) * (math.exp(w * tau) - 1) / w
            total += logits[mark] - math.log(sum(math.exp(c) for c in logits))
    got = float(t.loss(t.model, x, y).detach())
    assert abs(got + total / 1024) < 1e-5 and got > 2.5
    # the gap's density integrates to 1 (w > 0), to 1 − exp(e^a / w) (w < 0: maybe no next
    # event), and reads e^a·e^{−e^a τ} at w = 0
    s = torch.linspace(0, 60, 600001, dtype=torch.float64)
    zero = torch.zeros(len(s), 8, dtype=torch.float64)
    for a, w in ((0.3, 0.5), (-1.0, 0.05), (0.5, -0.4)):
        ll = tasks._rmtpp_log_lik(torch.full_like(s, a), torch.full_like(s, w), zero, s,
                                  torch.zeros(len(s), dtype=torch.long))
        mass = float(torch.trapezoid((ll + math.log(8)).exp(), s))
        assert abs(mass - (1 if w > 0 else 1 - math.exp(math.exp(a) / w))) < 1e-6
    ll = tasks._rmtpp_log_lik(torch.tensor(0.2), torch.tensor(0.0), torch.zeros(8),
                              torch.tensor(1.5), torch.tensor(3))
    assert abs(float(ll) - (0.2 - math.exp(0.2) * 1.5 - math.log(8))) < 1e-6
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the teacher as a model reads the floor, about 1.16 (1.17 on the test sequences)
    oracle = _TPPTeacher(teacher)
    floor = float(tasks._tpp_teacher_nll(teacher, ytr).mean())
    assert abs(t.train_loss(oracle) - floor) < 1e-9 and 1.1 < floor < 1.25
    test_floor = float(tasks._tpp_teacher_nll(teacher, yte).mean())
    assert abs(t.test_metric(oracle)[1] - test_floor) < 1e-9
    name, value = t.test_metric(t.model)
    assert name == "test_nll" and abs(value - float(t.loss(t.model, Xte, yte).detach())) < 1e-5
    assert t.train_loss(t.model) > 2.5 and t.steps == 372


def test_round_34_s_held_out_tasks_are_in_the_selection_of_round_35():
    for name in ("hypernet_curves", "lasso_logistic"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _hyper_draws_by_hand():
    """The hypernetwork data's seed's draws, in order: the teacher (A, a, B, θ_0), the contexts,
    the points, the noise."""
    g = torch.Generator().manual_seed(2060)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A, a, B, theta0 = 0.75 * r(16, 4), 0.1 * r(16), 0.25 * r(49, 16), r(49)
    Z = r(2500, 4).float().double()
    x = (4 * torch.rand(2500, 16, generator=g, dtype=torch.float64) - 2).float().double()
    return A, a, B, theta0, Z, x, 0.3 * r(2500, 16)


_HYPER_SCALE = [1.5] * 16 + [1.0] * 16 + [0.25] * 16 + [1.0]


def _curve_by_hand(z, xs, A, a, B, theta0):
    """One row's raw outputs (before the standardising) by explicit sums: h = tanh(A z + a),
    θ = s ⊙ (θ_0 + B h), f(x) = Σ_k w2_k tanh(w1_k x + b1_k) + b2 at each point x."""
    h = [math.tanh(sum(ak * zk for ak, zk in zip(row, z)) + c) for row, c in zip(A, a)]
    th = [s * (t0 + sum(bk * hk for bk, hk in zip(row, h)))
          for row, t0, s in zip(B, theta0, _HYPER_SCALE)]
    w1, b1, w2, b2 = th[:16], th[16:32], th[32:48], th[48]
    return [sum(w2[k] * math.tanh(w1[k] * v + b1[k]) for k in range(16)) + b2 for v in xs]


def test_hypernet_curves_data_are_a_teacher_hypernetwork_s_curves_plus_noise():
    Xtr, ytr, Xte, yte, teacher = tasks._hyper_data()
    assert Xtr.shape == (2000, 20) and Xte.shape == (500, 20) and ytr.shape == (2000, 16, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 16, 2)
    A, a, B, theta0, Z, x, noise = _hyper_draws_by_hand()
    assert torch.equal(teacher["A"], A) and torch.equal(teacher["a"], a)
    assert torch.equal(teacher["B"], B) and torch.equal(teacher["theta0"], theta0)
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([yte.new_zeros(0, 16, 2), ytr, yte])
    assert torch.equal(X, torch.cat([Z, x], -1))
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    # the raw curves by a batched formula of our own (einsum over the units), then μ and σ
    s = torch.tensor(_HYPER_SCALE, dtype=torch.float64)
    th = s * (theta0 + torch.tanh(Z @ A.T + a) @ B.T)
    raw = torch.einsum("nk,nik->ni", th[:, 32:48], torch.tanh(
        x[..., None] * th[:, None, :16] + th[:, None, 16:32])) + th[:, 48:]
    mu, sd = float(raw.mean()), float(raw.std())
    assert abs(teacher["mu"] - mu) < 1e-12 and abs(teacher["sd"] - sd) < 1e-12
    # a few rows by explicit sums: the clean targets are the standardised raw curves
    for i in (0, 1, 1999, 2400):
        want = [(v - mu) / sd for v in _curve_by_hand(Z[i].tolist(), x[i].tolist(),
                                                      A.tolist(), a.tolist(), B.tolist(),
                                                      theta0.tolist())]
        assert float((y[i, :, 1] - torch.tensor(want, dtype=torch.float64)).abs().max()) < 1e-12
    assert abs(float(y[..., 1].mean())) < 1e-12 and abs(float(y[..., 1].std()) - 1) < 1e-12
    # the noise: the next draws, N(0, 0.3²); it alone costs 0.09 (0.0887 on the training targets)
    assert float((y[..., 0] - y[..., 1] - noise).abs().max()) < 1e-12
    assert 0.085 < float((noise[:2000] ** 2).mean()) < 0.092
    # the context matters: over a grid of x, most of the curves' spread is between contexts
    grid = torch.linspace(-2, 2, 41, dtype=torch.float64).expand(2500, 41)
    f = (tasks._hyper_target(grid, th) - mu) / sd
    assert float(f.var(0).mean()) > 0.8 and float(f.mean(0).var()) < 0.2


def _teacher_as_hypernet(m, teacher):
    """Load the teacher into the model ``m`` (its first 16 hidden units; the rest of the body and
    their head's columns 0), with the standardising folded into the head and θ_0."""
    A, a, B, theta0 = teacher["A"], teacher["a"], teacher["B"], teacher["theta0"]
    s = torch.tensor(_HYPER_SCALE, dtype=torch.float64)
    out = torch.ones(49, dtype=torch.float64)
    out[32:] = 1 / teacher["sd"]  # w2 and b2 read / σ, b2 − μ before
    shift = torch.zeros(49, dtype=torch.float64)
    shift[48] = -teacher["mu"] / teacher["sd"]
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.body.weight[:16] = A
        m.body.bias[:16] = a
        m.head.weight[:, :16] = (out * s)[:, None] * B
        m.theta0.copy_(out * s * theta0 + shift)
    return m


def test_hypernet_curves_model_generates_each_row_s_weights_by_hand_and_holds_the_teacher():
    Xtr, ytr, Xte, yte, teacher = tasks._hyper_data()
    t = tasks.hypernet_curves(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 20) and y.shape == (32, 16, 2) and x.dtype == torch.float32
    shapes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert shapes == [("theta0", (49,)), ("body.weight", (32, 4)), ("body.bias", (32,)),
                      ("head.weight", (49, 32)), ("head.bias", (49,))]
    assert sum(p.numel() for p in m.parameters()) == 1826
    th0 = m.theta0.detach()
    assert float(th0[:32].abs().max()) <= 1 and float(th0[:32].abs().max()) > 0.8  # U(±1)
    assert float(th0[32:].abs().max()) <= 0.25
    V, c = m.body.weight.double().tolist(), m.body.bias.double().tolist()
    W, d = m.head.weight.double().tolist(), m.head.bias.double().tolist()
    t0 = th0.double().tolist()
    with torch.no_grad():
        out = m(x).double()
    assert out.shape == (32, 16)
    for i in (0, 31):  # two rows by explicit sums: θ = θ_0 + W tanh(V z + c) + d
        z, pts = x[i, :4].double().tolist(), x[i, 4:].double().tolist()
        h = [math.tanh(sum(vk * zk for vk, zk in zip(row, z)) + ci) for row, ci in zip(V, c)]
        th = [tk + sum(wk * hk for wk, hk in zip(row, h)) + dk for row, tk, dk in zip(W, t0, d)]
        want = [sum(th[32 + k] * math.tanh(th[k] * v + th[16 + k]) for k in range(16)) + th[48]
                for v in pts]
        assert float((out[i] - torch.tensor(want, dtype=torch.float64)).abs().max()) < 1e-5
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    # the teacher is one of the model's settings: loaded, it gives the noise-free targets
    m64 = _teacher_as_hypernet(copy.deepcopy(m).double(), teacher)
    with torch.no_grad():
        assert float((m64(Xtr.double()) - ytr[..., 1]).abs().max()) < 1e-9
        assert float((m64(Xte.double()) - yte[..., 1]).abs().max()) < 1e-9


def test_hypernet_curves_loss_is_the_mse_to_the_noisy_targets_and_the_teacher_reads_the_noise():
    Xtr, ytr, Xte, yte, teacher = tasks._hyper_data()
    t = tasks.hypernet_curves(0)
    assert _assert_batch_and_test_mse_by_hand(t, 16, Xte, yte) > 0.5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    oracle = _Double(_teacher_as_hypernet(copy.deepcopy(t.model).double(), teacher))
    noise_tr = float(((ytr[..., 0] - ytr[..., 1]) ** 2).mean())
    noise_te = float(((yte[..., 0] - yte[..., 1]) ** 2).mean())
    assert abs(t.train_loss(oracle) - noise_tr) < 1e-9 and 0.085 < noise_tr < 0.092
    assert abs(t.test_metric(oracle)[1] - noise_te) < 1e-9
    assert t.train_loss(t.model) > 0.5 and t.steps == 992


def _lasso_draws_by_hand():
    """The lasso data's seed's draws, in order: e, the support, the signs, the magnitudes, the
    labels' uniforms; x from e by the AR(1) chain's closed form, x_j = 0.95^j e_0 + Σ_{1≤k≤j}
    0.95^{j−k} √(1 − 0.95²) e_k, a lower-triangular matrix."""
    g = torch.Generator().manual_seed(2062)
    e = torch.randn(2500, 500, generator=g, dtype=torch.float64)
    j = torch.arange(500, dtype=torch.float64)
    lag = j[:, None] - j[None, :]
    L = torch.where(lag >= 0, 0.95 ** lag.clamp_min(0), torch.zeros(()).double())
    L[:, 1:] *= math.sqrt(1 - 0.95 ** 2)
    support = torch.randperm(500, generator=g)[:20]
    sign = torch.where(torch.rand(20, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    mag = 0.5 + torch.rand(20, generator=g, dtype=torch.float64)
    u = torch.rand(2500, generator=g, dtype=torch.float64)
    return e @ L.T, support, sign * mag, u


def test_lasso_logistic_data_are_a_sparse_logistic_teacher_s_labels_on_correlated_features():
    Xtr, ytr, Xte, yte, w = tasks._lasso_data()
    assert Xtr.shape == (2000, 500) and Xte.shape == (500, 500) and ytr.shape == (2000, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 2)
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    x_hand, support, weights, u = _lasso_draws_by_hand()
    assert float((X - x_hand).abs().max()) < 1e-5  # float32 rounding of the same chain
    assert torch.equal(w.nonzero()[:, 0], support.sort().values)
    assert torch.equal(w[support], weights)
    assert float(w.abs()[support].min()) >= 0.5 and float(w.abs().max()) <= 1.5
    assert 0 < int((w > 0).sum()) < 20
    # every feature N(0, 1), neighbours correlated 0.95, ten apart 0.95¹⁰ ≈ 0.60
    assert float((X.std(0) - 1).abs().mean()) < 0.03 and float(X.mean(0).abs().mean()) < 0.03
    for lag in (1, 10):
        c = float((X[:, :-lag] * X[:, lag:]).mean())
        assert abs(c - 0.95 ** lag) < 0.03
    # the labels: 1 where the uniform falls below σ(w*·x + 0.3), by explicit sums for a few
    p = torch.sigmoid(X @ w + 0.3)
    assert float((y[:, 1] - p).abs().max()) < 1e-12
    assert torch.equal(y[:, 0], (u < p).double())
    for i in (0, 7, 2499):
        s = sum(X[i, k].item() * w[k].item() for k in support.tolist()) + 0.3
        assert abs(float(y[i, 1]) - 1 / (1 + math.exp(-s))) < 1e-12
    assert abs(float(y[:, 0].mean() - p.mean())) < 0.02
    nll = float(F.binary_cross_entropy(ytr[:, 1], ytr[:, 0]))
    assert 0.25 < nll < 0.28  # the teacher's own log-loss on the training labels, 0.266


def _lasso_optimum(X, y, lam=0.01, iters=1500):
    """min_{w, b} mean log-loss + λ‖w‖₁ by FISTA (proximal gradient with Nesterov's momentum, step
    1/L, L a bound on the log-loss's curvature), float64."""
    n = len(y)
    L = float(torch.linalg.eigvalsh(X.T @ X / n).max() + 1) / 4
    w, b = torch.zeros(X.shape[1], dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    vw, vb, t = w, b, 1.0
    for _ in range(iters):
        r = torch.sigmoid(X @ vw + vb) - y
        step = vw - X.T @ r / (n * L)
        w1 = step.sign() * (step.abs() - lam / L).clamp_min(0)
        b1 = vb - r.mean() / L
        t1 = (1 + math.sqrt(1 + 4 * t * t)) / 2
        vw, vb = w1 + (t - 1) / t1 * (w1 - w), b1 + (t - 1) / t1 * (b1 - b)
        w, b, t = w1, b1, t1
    return w, b


def test_lasso_logistic_loss_is_the_log_loss_plus_the_l1_penalty_and_its_optimum_is_the_floor():
    Xtr, ytr, Xte, yte, w_true = tasks._lasso_data()
    t = tasks.lasso_logistic(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 500) and y.shape == (32, 2) and x.dtype == torch.float32
    assert [(n, tuple(p.shape)) for n, p in m.named_parameters()] == [("weight", (1, 500)),
                                                                     ("bias", (1,))]
    assert float(m.weight.detach().abs().max()) <= 1 / math.sqrt(500)
    wl, b = m.weight.double()[0].tolist(), float(m.bias.detach())

    def by_hand(xs, ys, wl, b):  # mean log(1 + e^{−(2y − 1) s}) + 0.01 Σ |w_j|, s = w·x + b
        total = 0.0
        for v, lab in zip(xs.double().tolist(), ys[:, 0].tolist()):
            s = sum(wk * vk for wk, vk in zip(wl, v)) + b
            total += math.log1p(math.exp(-(2 * lab - 1) * s))
        return total / len(xs), 0.01 * sum(abs(wk) for wk in wl)

    with torch.no_grad():
        logits = m(x).double()
    assert logits.shape == (32,)
    for i in (0, 31):
        want = sum(wk * vk for wk, vk in zip(wl, x[i].tolist())) + b
        assert abs(float(logits[i]) - want) < 1e-5
    nll, pen = by_hand(x, y, wl, b)
    a = float(t.loss(m, x, y).detach())
    assert abs(a - (nll + pen)) < 1e-5 and pen > 0.05
    # the bias is not penalised
    with torch.no_grad():
        m.bias.fill_(2.0)
    nll2, _ = by_hand(x, y, wl, 2.0)
    assert abs(float(t.loss(m, x, y).detach()) - (nll2 + pen)) < 1e-5
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    name, value = t.test_metric(m)
    assert name == "test_log_loss" and abs(value - by_hand(Xte, yte, wl, 2.0)[0]) < 1e-5
    # the floor: the penalised optimum, checked by its optimality conditions (the log-loss's
    # gradient −0.01 sign(w_j) where w_j ≠ 0, within ±0.01 where w_j = 0, 0 for the bias)
    X, lab = Xtr.double(), ytr[:, 0]
    w, b = _lasso_optimum(X, lab)
    r = torch.sigmoid(X @ w + b) - lab
    grad, on = X.T @ r / 2000, w != 0
    assert float((grad[on] + 0.01 * w[on].sign()).abs().max()) < 1e-5
    assert float(grad[~on].abs().max()) < 0.01 + 1e-5 and abs(float(r.mean())) < 1e-6
    floor = float(F.binary_cross_entropy_with_logits(X @ w + b, lab) + 0.01 * w.abs().sum())
    assert 0.375 < floor < 0.39 and 40 < int(on.sum()) < 70  # 0.3818, 54 nonzero
    assert int((on & (w_true != 0)).sum()) >= 17  # it finds most of the teacher's 20
    with torch.no_grad():
        m.weight.copy_(w[None])
        m.bias.fill_(float(b))
    assert abs(t.train_loss(m) - floor) < 1e-5
    # the teacher itself sits above it: 0.442
    teacher = float(F.binary_cross_entropy(ytr[:, 1], lab) + 0.01 * w_true.abs().sum())
    assert floor + 0.05 < teacher < 0.46
    assert tasks.lasso_logistic(0).train_loss(tasks.lasso_logistic(0).model) > 0.7
    assert t.steps == 186


def test_round_35_s_held_out_tasks_are_in_the_selection_of_round_36():
    for name in ("sparse_gp", "multitask_heads"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _gp_draws_by_hand():
    """The GP data's seed's draws, in order: the points, the frequencies (over the length-scales
    0.6 and 0.9), the phases, the amplitudes, the noise."""
    g = torch.Generator().manual_seed(2064)
    x = (4 * torch.rand(1000, 2, generator=g, dtype=torch.float64) - 2).float().double()
    omega = torch.randn(256, 2, generator=g, dtype=torch.float64)
    omega = omega / torch.tensor([0.6, 0.9], dtype=torch.float64)
    b = 2 * math.pi * torch.rand(256, generator=g, dtype=torch.float64)
    a = math.sqrt(2 / 256) * torch.randn(256, generator=g, dtype=torch.float64)
    return x, omega, b, a, 0.5 * torch.randn(1000, generator=g, dtype=torch.float64)


def test_sparse_gp_data_are_a_smooth_random_function_plus_noise():
    Xtr, ytr, Xte, yte = tasks._gp_data()
    assert Xtr.shape == (600, 2) and Xte.shape == (400, 2) and ytr.shape == (600, 2)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (400, 2)
    x, omega, b, a, noise = _gp_draws_by_hand()
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    assert torch.equal(X, x) and float(x.min()) >= -2 and float(x.max()) <= 2
    # the raw function by explicit sums over the 256 features for a few points, then μ and σ
    raw = torch.cos(x @ omega.T + b) @ a
    for i in (0, 1, 599, 999):
        want = sum(ak * math.cos(wk[0] * x[i, 0].item() + wk[1] * x[i, 1].item() + bk)
                   for ak, wk, bk in zip(a.tolist(), omega.tolist(), b.tolist()))
        assert abs(float(raw[i]) - want) < 1e-12
    f = (raw - raw.mean()) / raw.std()
    assert float((y[:, 1] - f).abs().max()) < 1e-12
    assert abs(float(y[:, 1].mean())) < 1e-12 and abs(float(y[:, 1].std()) - 1) < 1e-12
    # the noise: the next draws, N(0, 0.5²); 0.2587 on the training targets
    assert float((y[:, 0] - y[:, 1] - noise).abs().max()) < 1e-12
    assert 0.25 < float((noise[:600] ** 2).mean()) < 0.27
    # shorter along x₁ than along x₂: f changes more over a step of 0.3 along the first
    step = lambda d: torch.cos((x + d) @ omega.T + b) @ a  # noqa: E731
    along = [float(((step(torch.tensor(d, dtype=torch.float64)) - raw) ** 2).mean())
             for d in ([0.3, 0.0], [0.0, 0.3])]
    assert along[0] > 1.2 * along[1]


def _rbf_by_hand(A, B, ell, var):
    """σ_f² exp(−½ Σ_d (a_d − b_d)² / ℓ_d²) entry by entry. (float64)"""
    return torch.tensor([[var * math.exp(-0.5 * sum((p - q) ** 2 / e ** 2
                                                   for p, q, e in zip(u, w, ell)))
                          for w in B.tolist()] for u in A.tolist()], dtype=torch.float64)


def _svgp_by_hand(m, x):
    """q(f(x))'s means and variances and KL(q(u) ‖ p(u)) by the unwhitened formulas: u = L v,
    L numpy's Cholesky factor of K = K_ZZ + 10⁻⁶ σ_f² I, so q(u) = N(L m, L S Lᵀ), S = C Cᵀ; f(x)
    given u has mean k_xᵀ K⁻¹ u and variance σ_f² − k_xᵀ K⁻¹ k_x. (numpy float64)"""
    ell = torch.exp(m.log_lengthscale.detach().double()).tolist()
    var = math.exp(float(m.log_variance.detach()))
    Z = m.Z.detach().double()
    K = _rbf_by_hand(Z, Z, ell, var).numpy() + 1e-6 * var * np.eye(32)
    L = np.linalg.cholesky(K)
    C = np.tril(m.chol.detach().double().numpy())
    mu_u, cov_u = L @ m.mean.detach().double().numpy(), L @ C @ C.T @ L.T
    k = _rbf_by_hand(Z, x.double(), ell, var).numpy()  # (32, n)
    Kk = np.linalg.solve(K, k)
    mean = Kk.T @ mu_u
    variance = var - (k * Kk).sum(0) + (Kk * (cov_u @ Kk)).sum(0)
    kl = 0.5 * (np.trace(np.linalg.solve(K, cov_u)) + mu_u @ np.linalg.solve(K, mu_u) - 32
                + np.linalg.slogdet(K)[1] - np.linalg.slogdet(cov_u)[1])
    return mean, variance, kl


def test_sparse_gp_loss_is_the_negative_elbo_per_point_by_hand():
    Xtr, ytr, Xte, yte = tasks._gp_data()
    t = tasks.sparse_gp(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 2) and y.shape == (32, 2) and x.dtype == torch.float32
    shapes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert shapes == [("Z", (32, 2)), ("log_lengthscale", (2,)), ("log_variance", ()),
                      ("log_noise", ()), ("mean", (32,)), ("chol", (32, 32))]
    assert sum(p.numel() for p in m.parameters()) == 1124
    assert float(m.Z.detach().abs().max()) <= 2 and float(m.Z.detach().abs().max()) > 1.8
    assert torch.equal(m.chol.detach(), torch.eye(32)) and float(m.mean.detach().abs().sum()) == 0
    # at the start q is the prior (all hyperparameters 1): no KL, f(x) ~ N(0, 1) at every point
    a = float(t.loss(m, x, y).detach())
    assert abs(a - (0.5 * math.log(2 * math.pi) + float((y[:, 0] ** 2 + 1).mean()) / 2)) < 1e-9
    assert abs(t.train_loss(m) - (0.5 * math.log(2 * math.pi)
                                  + float((ytr[:, 0] ** 2 + 1).mean()) / 2)) < 1e-9
    # elsewhere: −mean E_q log N(y | f, σ_n²) + KL / 600, by the unwhitened formulas
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        m.log_lengthscale.copy_(torch.tensor([-0.3, 0.2]))
        m.log_variance.fill_(0.1)
        m.log_noise.fill_(-0.5)
        m.mean.copy_(torch.randn(32, generator=g))
        m.chol.copy_(torch.eye(32) + 0.1 * torch.randn(32, 32, generator=g))
    mean, variance, kl = _svgp_by_hand(m, x)
    noise = math.exp(-0.5)
    fit = 0.5 * math.log(2 * math.pi * noise) + ((y[:, 0].numpy() - mean) ** 2 + variance) / (
        2 * noise)
    a = t.loss(m, x, y)
    assert a.dtype == torch.float64 and kl > 1
    assert abs(float(a.detach()) - (fit.mean() + kl / 600)) < 1e-8
    with torch.no_grad():
        mu, var, _ = m.marginals(x)
    assert float((mu - torch.from_numpy(mean)).abs().max()) < 1e-8
    assert float((var - torch.from_numpy(variance)).abs().max()) < 1e-8
    # the whole set's loss is the batch loss with every row in one batch
    assert abs(float(t.loss(m, Xtr, ytr).detach()) - t.train_loss(m)) < 1e-12
    a.backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    assert float(torch.triu(m.chol.grad, 1).abs().sum()) == 0  # above C's diagonal: unused
    # the test metric: −log N(y | μ, s² + σ_n²) per test point
    mean, variance, _ = _svgp_by_hand(m, Xte)
    total = variance + noise
    want = (0.5 * np.log(2 * math.pi * total) + (yte[:, 0].numpy() - mean) ** 2 / (2 * total))
    name, value = t.test_metric(m)
    assert name == "test_nll" and abs(value - want.mean()) < 1e-8
    # a factorisation that fails gives NaN, not an error
    with torch.no_grad():
        m.log_variance.fill_(float("nan"))
    assert math.isnan(float(t.loss(m, x, y).detach())) and math.isnan(t.train_loss(m))
    assert t.steps == 180


def _exact_gp_nll(X, y, log_params):
    """The exact GP's negative log marginal likelihood per point, −log N(y | 0, K + σ_n² I) / n,
    K the ARD RBF kernel (log ℓ₁, log ℓ₂, log σ_f², log σ_n²), by slogdet and solve. (float64)"""
    ell, var, noise = log_params[:2].exp(), log_params[2].exp(), log_params[3].exp()
    d = (X[:, None] - X[None]) / ell
    K = var * torch.exp(-0.5 * (d * d).sum(-1)) + noise * torch.eye(len(X), dtype=X.dtype)
    return (0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.linalg.slogdet(K)[1]) / len(y) + (
        0.5 * math.log(2 * math.pi))


def test_sparse_gp_floor_is_the_exact_gp_s_least_nll_and_every_setting_sits_above_it():
    Xtr, ytr, Xte, yte = tasks._gp_data()
    X, y = Xtr.double(), ytr[:, 0]
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=60, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        v = _exact_gp_nll(X, y, p)
        v.backward()
        return v

    opt.step(closure)
    floor = _exact_gp_nll(X, y, p)
    (grad,) = torch.autograd.grad(floor, p)
    floor, p = float(floor), p.detach()
    assert float(grad.abs().max()) < 1e-7  # a stationary point: 0.8378 at ℓ = 0.655, 0.829,
    assert 0.83 < floor < 0.845              # σ_f² = 1.197, σ_n² = 0.253
    ell, var, noise = p.exp().tolist()[:2], float(p[2].exp()), float(p[3].exp())
    assert 0.55 < ell[0] < 0.75 and 0.7 < ell[1] < 0.95 and 0.23 < noise < 0.28
    for d in torch.eye(4, dtype=torch.float64):  # and a minimum along each axis
        for s in (-0.05, 0.05):
            assert float(_exact_gp_nll(X, y, p + s * d)) > floor
    # the task's loss at a setting is at least the exact NLL at its hyperparameters: at the start
    t = tasks.sparse_gp(0)
    start = float(_exact_gp_nll(X, y, torch.zeros(4, dtype=torch.float64)))
    assert t.train_loss(t.model) > start > floor + 0.3
    # at the optimum's hyperparameters, 32 training points as Z and Titsias's optimal q (S = (I +
    # A Aᵀ/σ_n²)⁻¹, m = S A y/σ_n², A = L⁻¹ K_Zx), the loss is the collapsed bound, −[log N(y | 0,
    # Q + σ_n² I) − tr(K − Q)/(2σ_n²)]/n, Q = K_xZ K⁻¹ K_Zx: above the floor (1.019; these Z
    # leave gaps that learned ones close)
    m = copy.deepcopy(t.model).double()
    Z = X[::18][:32]
    K = _rbf_by_hand(Z, Z, ell, var) + 1e-6 * var * torch.eye(32, dtype=torch.float64)
    A = torch.linalg.solve_triangular(torch.linalg.cholesky(K),
                                      _rbf_by_hand(Z, X, ell, var), upper=False)
    S = torch.linalg.inv(torch.eye(32, dtype=torch.float64) + A @ A.T / noise)
    with torch.no_grad():
        m.Z.copy_(Z)
        m.log_lengthscale.copy_(p[:2])
        m.log_variance.fill_(float(p[2]))
        m.log_noise.fill_(float(p[3]))
        m.mean.copy_(S @ A @ y / noise)
        m.chol.copy_(torch.linalg.cholesky(S))
    Q = A.T @ A
    cov = Q + noise * torch.eye(600, dtype=torch.float64)
    collapsed = (0.5 * y @ torch.linalg.solve(cov, y) + 0.5 * torch.linalg.slogdet(cov)[1]
                 + 0.5 * 600 * math.log(2 * math.pi) + (var * 600 - Q.trace()) / (2 * noise))
    assert abs(t.train_loss(m) - float(collapsed) / 600) < 1e-9
    assert floor + 0.1 < t.train_loss(m) < t.train_loss(t.model)


def _mtl_draws_by_hand():
    """The multi-task data's seed's draws, in order: the teacher's W1, b1, W2, b2, R and V, the
    inputs, the noise."""
    g = torch.Generator().manual_seed(2066)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    W1, b1 = (1.5 / math.sqrt(8)) * r(32, 8), 0.1 * r(32)
    W2, b2 = (1.5 / math.sqrt(32)) * r(32, 32), 0.1 * r(32)
    R, V = (1 / math.sqrt(32)) * r(8, 32), (3 / math.sqrt(32)) * r(5, 32)
    X = r(2500, 8).float().double()
    return W1, b1, W2, b2, R, V, X, 0.3 * r(2500, 8)


def _mtl_teacher_by_hand(x, W1, b1, W2, b2, R, V):
    """One row's raw regression outputs R h and class probabilities softmax(V h) by explicit sums,
    h = tanh(W2 tanh(W1 x + b1) + b2)."""
    h = [math.tanh(sum(w * v for w, v in zip(row, x)) + c) for row, c in zip(W1, b1)]
    h = [math.tanh(sum(w * v for w, v in zip(row, h)) + c) for row, c in zip(W2, b2)]
    raw = [sum(w * v for w, v in zip(row, h)) for row in R]
    logits = [sum(w * v for w, v in zip(row, h)) for row in V]
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    return raw, [v / sum(e) for v in e]


def test_multitask_heads_data_are_one_teacher_s_targets_and_class_probabilities():
    Xtr, ytr, Xte, yte, teacher = tasks._mtl_data()
    assert Xtr.shape == (2000, 8) and Xte.shape == (500, 8) and ytr.shape == (2000, 21)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.float64 and yte.shape == (500, 21)
    W1, b1, W2, b2, R, V, x, noise = _mtl_draws_by_hand()
    for k, v in dict(W1=W1, b1=b1, W2=W2, b2=b2, V=V).items():
        assert torch.equal(teacher[k], v), k
    X, y = torch.cat([Xtr, Xte]).double(), torch.cat([ytr, yte])
    assert torch.equal(X, x)
    # the raw outputs by a batched formula of our own, then each output's μ and σ
    h = torch.tanh(torch.tanh(x @ W1.T + b1) @ W2.T + b2)
    raw = h @ R.T
    mu, sd = raw.mean(0), raw.std(0)
    assert float((teacher["R"] - R / sd[:, None]).abs().max()) < 1e-12
    assert float((teacher["c"] + mu / sd).abs().max()) < 1e-12
    for i in (0, 1, 1999, 2400):  # a few rows by explicit sums
        r_i, p_i = _mtl_teacher_by_hand(x[i].tolist(), W1.tolist(), b1.tolist(), W2.tolist(),
                                        b2.tolist(), R.tolist(), V.tolist())
        want = (torch.tensor(r_i, dtype=torch.float64) - mu) / sd
        assert float((y[i, 13:] - want).abs().max()) < 1e-12
        assert float((y[i, 8:13] - torch.tensor(p_i, dtype=torch.float64)).abs().max()) < 1e-12
    assert float(y[:, 13:].mean(0).abs().max()) < 1e-12
    assert float((y[:, 13:].std(0) - 1).abs().max()) < 1e-12
    # the noise: the next draws, N(0, 0.3²); it alone costs 0.09 (0.0896 on the training targets)
    assert float((y[:, :8] - y[:, 13:] - noise).abs().max()) < 1e-12
    assert 0.087 < float((noise[:2000] ** 2).mean()) < 0.092
    # the classes: probabilities, the teacher's mean entropy 0.99 nats, every class someone's best
    p = ytr[:, 8:13]
    assert float((p.sum(-1) - 1).abs().max()) < 1e-12 and float(p.min()) > 0
    assert 0.95 < float(-(p * p.log()).sum(-1).mean()) < 1.03
    assert float(torch.bincount(p.argmax(-1), minlength=5).min()) > 200


def _teacher_as_two_heads(m, teacher):
    """Load the teacher into the model ``m``: its 32 units in the trunk's first 32 of each layer,
    the rest of the trunk 0 (those units then give tanh(0) = 0), the heads reading them."""
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.trunk[0].weight[:32] = teacher["W1"]
        m.trunk[0].bias[:32] = teacher["b1"]
        m.trunk[2].weight[:32, :32] = teacher["W2"]
        m.trunk[2].bias[:32] = teacher["b2"]
        m.regress.weight[:, :32] = teacher["R"]
        m.regress.bias.copy_(teacher["c"])
        m.classify.weight[:, :32] = teacher["V"]
    return m


def test_multitask_heads_model_is_one_trunk_under_two_heads_by_hand_and_holds_the_teacher():
    Xtr, ytr, Xte, yte, teacher = tasks._mtl_data()
    t = tasks.multitask_heads(0)
    m = t.model
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 8) and y.shape == (32, 21) and x.dtype == torch.float32
    shapes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert shapes == [("trunk.0.weight", (64, 8)), ("trunk.0.bias", (64,)),
                      ("trunk.2.weight", (64, 64)), ("trunk.2.bias", (64,)),
                      ("regress.weight", (8, 64)), ("regress.bias", (8,)),
                      ("classify.weight", (5, 64)), ("classify.bias", (5,))]
    assert sum(p.numel() for p in m.parameters()) == 5581
    W1, b1 = m.trunk[0].weight.double().tolist(), m.trunk[0].bias.double().tolist()
    W2, b2 = m.trunk[2].weight.double().tolist(), m.trunk[2].bias.double().tolist()
    with torch.no_grad():
        out = m(x).double()
    assert out.shape == (32, 13)
    for i in (0, 31):  # two rows by explicit sums: both heads read the same trunk
        h = [math.tanh(sum(w * v for w, v in zip(row, x[i].tolist())) + c)
             for row, c in zip(W1, b1)]
        h = [math.tanh(sum(w * v for w, v in zip(row, h)) + c) for row, c in zip(W2, b2)]
        for head, cols in ((m.regress, slice(0, 8)), (m.classify, slice(8, 13))):
            want = [sum(w * v for w, v in zip(row, h)) + c
                    for row, c in zip(head.weight.double().tolist(), head.bias.double().tolist())]
            want = torch.tensor(want, dtype=torch.float64)
            assert float((out[i, cols] - want).abs().max()) < 1e-5
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    # the teacher is one of the model's settings: loaded, it gives the noise-free targets and the
    # teacher's log-probabilities
    m64 = _teacher_as_two_heads(copy.deepcopy(m).double(), teacher)
    with torch.no_grad():
        for X, Y in ((Xtr, ytr), (Xte, yte)):
            o = m64(X.double())
            assert float((o[:, :8] - Y[:, 13:]).abs().max()) < 1e-9
            assert float((o[:, 8:].log_softmax(-1) - Y[:, 8:13].log()).abs().max()) < 1e-9


def test_multitask_heads_loss_is_the_mse_plus_the_kl_and_the_teacher_reads_the_noise():
    Xtr, ytr, Xte, yte, teacher = tasks._mtl_data()
    t = tasks.multitask_heads(0)
    x, y = next(iter(t.batches()))
    o = t.model(x).double().detach()

    def by_hand(o, y):  # Σ (o_k − y_k)² / (n·8) + Σ_c p_c (log p_c − log q_c) / n
        q = o[:, 8:].softmax(-1)
        mse = sum((o[i, k] - y[i, k]) ** 2 for i in range(len(o)) for k in range(8))
        kl = sum(y[i, 8 + c] * (math.log(y[i, 8 + c]) - math.log(q[i, c]))
                 for i in range(len(o)) for c in range(5))
        return float(mse) / (8 * len(o)), float(kl) / len(o)

    mse, kl = by_hand(o, y)
    a = float(t.loss(t.model, x, y).detach())
    assert abs(a - (mse + kl)) < 1e-5 and mse > 0.5 and kl > 0.2
    _assert_full_loss_is_the_batch_loss_over_all_rows(t, Xtr, ytr)
    # the floor: the teacher's loss is the noise alone (no KL), 0.0896 on the training targets
    oracle = _Double(_teacher_as_two_heads(copy.deepcopy(t.model).double(), teacher))
    noise_tr = float(((ytr[:, :8] - ytr[:, 13:]) ** 2).mean())
    noise_te = float(((yte[:, :8] - yte[:, 13:]) ** 2).mean())
    assert abs(t.train_loss(oracle) - noise_tr) < 1e-9 and 0.087 < noise_tr < 0.092
    assert abs(t.test_metric(oracle)[1] - noise_te) < 1e-9
    name, value = t.test_metric(t.model)
    mse, kl = by_hand(t.model(Xte[:100]).double().detach(), yte[:100])
    assert name == "test_loss" and abs(value - float(t.loss(t.model, Xte, yte).detach())) < 1e-5
    assert abs(float(t.loss(t.model, Xte[:100], yte[:100]).detach()) - (mse + kl)) < 1e-5
    assert t.train_loss(t.model) > 1.5 and t.steps == 2480


def test_round_36_s_held_out_tasks_are_in_the_selection_of_round_37():
    for name in ("seq2seq_reverse", "gmm_density"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _reversal_by_hand(src):
    """The noise-free output of one source (a list of 16 tokens) by explicit indexing: r_t =
    src[15 − t], raised by one (mod 16) where r_(t+1) (r_0 after the last) is 8 or more."""
    r = [src[15 - t] for t in range(16)]
    return [(r[t] + (1 if r[(t + 1) % 16] >= 8 else 0)) % 16 for t in range(16)]


def _noise_entropy_by_hand(V=16, eps=0.2):
    p = [1 - eps + eps / V] + [eps / V] * (V - 1)
    return -sum(q * math.log(q) for q in p)


def test_seq2seq_reverse_data_are_noisy_reversals_and_the_floor_is_the_noise_s_entropy():
    Xtr, ytr, Xte, yte = tasks._reversal_pairs()
    assert Xtr.shape == (6400, 32) and ytr.shape == (6400, 16) and Xte.shape == (1000, 32)
    assert Xtr.dtype == torch.long and yte.shape == (1000, 16)
    X, y = torch.cat([Xtr, Xte]), torch.cat([ytr, yte])
    src = X[:, :16]
    assert int(src.min()) == 0 and int(src.max()) == 15 and bool((y < 16).all())
    # teacher forcing: the decoder reads the start token (16), then the noisy output shifted
    assert bool((X[:, 16] == 16).all()) and torch.equal(X[:, 17:], y[:, :-1])
    clean = torch.tensor([_reversal_by_hand(s) for s in src.tolist()])
    assert torch.equal(tasks._s2s_clean(src), clean)
    # 20 % replaced by a uniform token (itself a sixteenth of the time): 18.75 % differ
    assert abs(float((y != clean).double().mean()) - 0.2 * 15 / 16) < 0.005
    assert abs(tasks._s2s_floor() - _noise_entropy_by_hand()) < 1e-12
    assert abs(tasks._s2s_floor() - 0.9903) < 1e-4
    # Gibbs: the expected cross-entropy of any prediction q against the noise's p is ≥ H(p)
    p = torch.tensor([1 - 0.2 + 0.2 / 16] + [0.2 / 16] * 15, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        q = torch.softmax(3 * torch.randn(16, generator=g, dtype=torch.float64), 0)
        assert float(-(p * q.log()).sum()) >= tasks._s2s_floor()


class _NoiseOracle(torch.nn.Module):
    """The noise's own conditional: log(1 − ε + ε/V) on the noise-free token, log(ε/V) elsewhere."""

    def forward(self, X):
        r = X[:, [15 - t for t in range(16)]]  # the source reversed, by its indices
        clean = (r + (r[:, [(t + 1) % 16 for t in range(16)]] >= 8).long()) % 16
        right, other = math.log(1 - 0.2 + 0.2 / 16), math.log(0.2 / 16)
        out = torch.full((len(X), 16, 16), other, dtype=torch.float64)
        return out.scatter(-1, clean[..., None], right)


def test_seq2seq_reverse_loss_is_the_token_cross_entropy_by_hand_and_the_oracle_reads_the_floor():
    Xtr, ytr, Xte, yte = tasks._reversal_pairs()
    t = tasks.seq2seq_reverse(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 31920
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 32) and y.shape == (32, 16)
    logits = m(x).double().detach()
    assert logits.shape == (32, 16, 16)
    want = _ce_by_hand(logits.reshape(32 * 16, 16).tolist(), y.reshape(-1).tolist())
    assert abs(float(t.loss(m, x, y).detach()) - want) < 1e-5
    # the whole set's loss is the batch loss with every row in one batch
    start = t.train_loss(m)
    with torch.no_grad():
        assert abs(float(t.loss(m, Xtr, ytr)) - start) < 1e-5
    # the decoder is causal: a change of the decoder's input at position 9 leaves the logits
    # before it alone; a change of the source reaches every position (cross-attention)
    x2 = x.clone()
    x2[:, 16 + 9] = (x2[:, 16 + 9] + 1) % 16
    with torch.no_grad():
        d = (m(x2) - m(x)).abs().amax((0, 2))
    assert float(d[:9].max()) == 0 and float(d[9:].min()) > 0
    x3 = x.clone()
    x3[:, 0] = (x3[:, 0] + 1) % 16
    with torch.no_grad():
        assert float((m(x3) - m(x)).abs().amax((0, 2)).min()) > 0
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    # the noise's own conditional reads its entropy (within sampling) on the training tokens,
    # the untrained model far above it
    oracle = _NoiseOracle()
    floor = tasks._s2s_floor()
    assert abs(t.train_loss(oracle) - floor) < 0.02
    assert start > floor + 1.5
    name, value = t.test_metric(oracle)
    assert name == "test_clean_acc" and value == 1.0
    assert t.test_metric(m)[1] < 0.2
    assert t.steps == 200


def _gmm_draws_by_hand():
    """The mixture's seed's draws, in order: weights, means, rotations, scales, components,
    standard normals."""
    g = torch.Generator().manual_seed(2070)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    w = torch.softmax(0.4 * r(6), 0)
    mu = 0.5 * r(6, 4)
    Q = torch.linalg.qr(r(6, 4, 4))[0]
    s = 0.15 + 0.2 * torch.rand(6, 4, generator=g, dtype=torch.float64)
    comp = torch.multinomial(w, 3000, replacement=True, generator=g)
    return w, mu, Q, s, comp, r(3000, 4)


def test_gmm_density_data_are_draws_of_a_fixed_overlapping_mixture():
    Xtr, ctr, Xte, cte, mix = tasks._gmm_data()
    assert Xtr.shape == (2000, 4) and Xte.shape == (1000, 4) and ctr.shape == (2000, 1)
    assert Xtr.dtype == torch.float32
    w, mu, Q, s, comp, z = _gmm_draws_by_hand()
    assert torch.equal(mix["weights"], w) and torch.equal(mix["means"], mu)
    assert torch.equal(torch.cat([ctr, cte])[:, 0], comp)
    for k in range(6):  # Σ_k = Q diag(s²) Qᵀ, entry by entry
        Sk = [[sum(Q[k, i, j] * s[k, j] ** 2 * Q[k, l, j] for j in range(4)) for l in range(4)]
              for i in range(4)]
        assert float((mix["covariances"][k] - torch.tensor(Sk)).abs().max()) < 1e-12
    X = torch.cat([Xtr, Xte]).double()
    for i in (0, 1, 2999):
        want = mu[comp[i]] + (Q[comp[i]] * s[comp[i]]) @ z[i]
        assert float((X[i] - want).abs().max()) < 1e-6
    # overlapping: the true responsibilities' mean entropy is 0.26 nats
    logp = torch.stack([torch.distributions.MultivariateNormal(mu[k], mix["covariances"][k])
                        .log_prob(Xtr.double()) for k in range(6)]) + w.log()[:, None]
    r = torch.softmax(logp, 0)
    assert 0.2 < float(-(r * r.clamp_min(1e-300).log()).sum(0).mean()) < 0.35
    assert abs(float(-torch.logsumexp(logp, 0).mean()) - 1.5393) < 1e-3


def _gmm_log_terms_by_hand(weights, means, covs, X):
    """log π_k + log N(x | μ_k, Σ_k), (K, n), by numpy's inverse and log-determinant. (float64)"""
    X = np.asarray(X, dtype=np.float64)
    terms = []
    for w, mu, S in zip(weights, means, covs):
        d = X - mu
        q = np.einsum("ni,ij,nj->n", d, np.linalg.inv(S), d)
        terms.append(np.log(w) - 0.5 * q - 0.5 * np.linalg.slogdet(2 * np.pi * S)[1])
    return np.array(terms)


def _gmm_nll_by_hand(weights, means, covs, X):
    """−mean log Σ_k π_k N(x | μ_k, Σ_k). (float64)"""
    logp = _gmm_log_terms_by_hand(weights, means, covs, X)
    top = logp.max(0)
    return float(-(top + np.log(np.exp(logp - top).sum(0))).mean())


def _load_gmm(m, weights, means, covs):
    """Set ``m`` (a _GMM) to a mixture: logits log π, the means, and each covariance's Cholesky
    factor, its diagonal through softplus⁻¹(· − 0.05)."""
    with torch.no_grad():
        m.logits.copy_(torch.as_tensor(np.log(weights)))
        m.means.copy_(torch.as_tensor(means))
        for k, S in enumerate(covs):
            L = torch.as_tensor(np.linalg.cholesky(S))
            raw = L.clone()
            raw.diagonal().copy_(torch.log(torch.expm1(L.diagonal() - 0.05)))
            m.chol[k] = raw
    return m


def _em(X, weights, means, covs, iters):
    """EM for a Gaussian mixture with full covariances, numpy float64."""
    X = np.asarray(X, dtype=np.float64)
    for _ in range(iters):
        logp = _gmm_log_terms_by_hand(weights, means, covs, X)
        r = np.exp(logp - logp.max(0))
        r /= r.sum(0)
        nk = r.sum(1)
        weights, means = nk / len(X), (r @ X) / nk[:, None]
        covs = np.array([(r[k, :, None] * (X - means[k])).T @ (X - means[k]) / nk[k]
                         for k in range(len(nk))])
    return weights, means, covs


def test_gmm_density_loss_is_the_mixture_nll_by_hand_and_the_floor_is_em_s_optimum():
    Xtr, ctr, Xte, cte, mix = tasks._gmm_data()
    t = tasks.gmm_density(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 126
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 4)
    # at the start: equal weights, L = I, the means the seed's N(0, I) draws
    L = m.cholesky().detach()
    assert float((L - torch.eye(4, dtype=torch.float64)).abs().max()) < 1e-6
    means = m.means.detach().double().numpy()
    want = _gmm_nll_by_hand(np.full(6, 1 / 6), means, (L @ L.transpose(1, 2)).numpy(), x)
    assert abs(float(t.loss(m, x, y).detach()) - want) < 1e-9
    # elsewhere: a random setting's covariances L Lᵀ from its own factors
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    L = m.cholesky().detach().numpy()
    w = torch.softmax(m.logits.detach().double(), 0).numpy()
    covs = L @ L.transpose(0, 2, 1)
    want = _gmm_nll_by_hand(w, m.means.detach().double().numpy(), covs, Xtr)
    assert abs(t.train_loss(m) - want) < 1e-9
    assert abs(float(t.loss(m, Xtr, ctr).detach()) - t.train_loss(m)) < 1e-12
    t.loss(m, x, y).backward()
    assert float(torch.triu(m.chol.grad, 1).abs().sum()) == 0  # above the diagonals: unused
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    name, value = t.test_metric(m)
    assert name == "test_nll" and abs(value - _gmm_nll_by_hand(
        w, m.means.detach().double().numpy(), covs, Xte)) < 1e-9
    # the floor: EM from the true mixture reaches the least NLL found (1.515009, the best of EM
    # from 12 starts in float64; others end at 1.519–1.536); loaded into the model it reads the
    # same, the true mixture and random settings above it
    true_nll = _gmm_nll_by_hand(*(mix[k].numpy() for k in ("weights", "means", "covariances")),
                                Xtr)
    ew, em, ec = _em(Xtr, mix["weights"].numpy(), mix["means"].numpy(),
                     mix["covariances"].numpy(), iters=200)
    floor = _gmm_nll_by_hand(ew, em, ec, Xtr)
    assert abs(floor - 1.515009) < 2e-6 and true_nll > floor + 0.02
    assert min(np.linalg.cholesky(S).diagonal().min() for S in ec) > 0.1  # above 0.05
    best = _load_gmm(copy.deepcopy(t.model), ew, em, ec)
    assert abs(t.train_loss(best) - floor) < 1e-6  # the parameters are float32
    assert t.train_loss(m) > floor + 1 and t.train_loss(tasks.gmm_density(1).model) > floor + 1
    for s in (-0.05, 0.05):  # a minimum along a few directions
        for p in best.parameters():
            moved = copy.deepcopy(best)
            with torch.no_grad():
                dict(moved.named_parameters())[
                    [n for n, q in best.named_parameters() if q is p][0]].add_(s)
            assert t.train_loss(moved) > floor
    assert t.steps == 310


def test_round_37_s_held_out_tasks_are_in_the_selection_of_round_38():
    for name in ("digits_made", "hinge_svm"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT


def _made_draws_by_hand():
    """The MADE teacher's and data's seeds' draws: the 32 digits (binarised at 0.5), each pixel's
    probability 0.95 where on and 0.05 where off; the components and uniforms of the 11600
    images."""
    Xtr = tasks._digits()[0]
    g = torch.Generator().manual_seed(2073)
    idx = torch.randperm(1200, generator=g)[:32]
    on = [[1 if float(Xtr[int(i), d]) >= 0.5 else 0 for d in range(64)] for i in idx]
    P = torch.tensor([[0.95 if b else 0.05 for b in row] for row in on], dtype=torch.float64)
    g = torch.Generator().manual_seed(2074)
    comp = torch.randint(0, 32, (11600,), generator=g)
    u = torch.rand(11600, 64, generator=g, dtype=torch.float64)
    return torch.tensor(on), P, comp, u


def _binary_entropy(p):
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def test_digits_made_data_are_draws_of_32_digits_with_flipped_pixels():
    Xtr, ytr, Xte, yte, ctr, cte = tasks._made_data()
    assert Xtr.shape == (9600, 64) and Xte.shape == (2000, 64) and Xtr.dtype == torch.float32
    assert torch.equal(ytr, Xtr) and torch.equal(yte, Xte)  # the targets are the pixels
    on, P, comp, u = _made_draws_by_hand()
    assert float((tasks._made_teacher() - P).abs().max()) < 1e-15
    assert torch.equal(torch.cat([ctr, cte]), comp)
    X = torch.cat([Xtr, Xte])
    for i in (0, 1, 5000, 11599):
        want = [1.0 if u[i, d] < P[comp[i], d] else 0.0 for d in range(64)]
        assert X[i].tolist() == want
    # 5 % of the pixels differ from their component's digit, every component drawn
    assert abs(float((X != on[comp].float()).double().mean()) - 0.05) < 0.002
    assert len(set(comp.tolist())) == 32
    # distinct digits: every two differ in 5 pixels or more
    dist = [[sum(int(a != b) for a, b in zip(on[k].tolist(), on[j].tolist())) for j in range(32)]
            for k in range(32)]
    assert min(dist[k][j] for k in range(32) for j in range(32) if k != j) == 5


def test_digits_made_floor_is_the_teacher_s_entropy_per_pixel():
    _, P, _, _ = _made_draws_by_hand()
    floor = tasks._made_floor()
    assert abs(floor - 0.252648) < 1e-6
    # H(X | Z) is 64 h(0.05) (every probability 0.05 or 0.95) and 0 ≤ H(Z | X) ≤ H(Z) = log 32
    h = _binary_entropy(0.05)
    assert h < floor < h + math.log(32) / 64
    # from fresh draws of another seed: H(X) = H(X | Z) + log 32 − H(Z | X), the posterior's
    # entropy averaged (its standard error small), and directly E[−log p(x)] (a looser check)
    g = torch.Generator().manual_seed(99)
    comp = torch.randint(0, 32, (100_000,), generator=g)
    x = (torch.rand(100_000, 64, generator=g, dtype=torch.float64) < P[comp]).double()
    joint = x @ P.log().T + (1 - x) @ (1 - P).log().T  # log p(x | k), (n, 32)
    post = torch.softmax(joint, 1)
    post_h = -(post * post.clamp_min(1e-300).log()).sum(1)
    se = float(post_h.std()) / math.sqrt(len(post_h)) / 64
    assert abs(h + (math.log(32) - float(post_h.mean())) / 64 - floor) < 4 * se and se < 2e-5
    logp = torch.logsumexp(joint, 1) - math.log(32)
    se = float(logp.std()) / math.sqrt(len(logp)) / 64
    assert abs(float(-logp.mean()) / 64 - floor) < 4 * se and se < 5e-4
    # Gibbs: another mixture's expected NLL of the teacher's draws is higher
    for scale in (0.8, 0.9):
        Q = 0.5 + scale * (P - 0.5)
        logq = torch.logsumexp(x @ Q.log().T + (1 - x) @ (1 - Q).log().T, 1) - math.log(32)
        assert float(-logq.mean()) / 64 > floor + 0.005


class _MixtureConditionals(torch.nn.Module):
    """The teacher's own autoregressive conditionals in the task's pixel order: the logit of
    p(x_d = 1 | the pixels before d) = Σ_k w_k P_kd, w_k ∝ Π_(j before d) P_kj^x_j (1 − P_kj)^(1 −
    x_j), pixel by pixel in the order."""

    def forward(self, X):
        P = tasks._made_teacher()
        rank = tasks._made_masks()[0]
        x = X.double()
        logw = torch.zeros(len(x), 32, dtype=torch.float64)
        out = torch.zeros(len(x), 64, dtype=torch.float64)
        for r in range(1, 65):
            d = int((rank == r).nonzero())
            p = (torch.softmax(logw, 1) * P[:, d]).sum(1)
            out[:, d] = torch.log(p) - torch.log(1 - p)
            logw = logw + x[:, d:d + 1] * P[:, d].log() + (1 - x[:, d:d + 1]) * (1 - P[:, d]).log()
        return out


def test_digits_made_loss_is_the_nll_per_pixel_by_hand_and_the_teacher_reads_the_floor():
    Xtr, ytr, Xte, yte, _, _ = tasks._made_data()
    t = tasks.digits_made(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 29960
    # the masks from their seed, entry by entry: the order's ranks and the hidden units' degrees
    g = torch.Generator().manual_seed(2076)
    rank = (torch.randperm(64, generator=g) + 1).tolist()
    deg = torch.randint(1, 64, (200,), generator=g).tolist()
    assert sorted(rank) == list(range(1, 65))
    assert m.hidden.mask.tolist() == [[float(deg[h] >= rank[i]) for i in range(64)]
                                      for h in range(200)]
    assert m.out.mask.tolist() == [[float(rank[d] > deg[h]) for h in range(200)]
                                   for d in range(64)]
    assert m.direct.mask.tolist() == [[float(rank[d] > rank[i]) for i in range(64)]
                                      for d in range(64)]
    assert m.direct.bias is None
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 64) and torch.equal(x, y)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # fresh random parameters, masked entries too
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    W1, b1 = m.hidden.weight.double().tolist(), m.hidden.bias.double().tolist()
    W2, b2 = m.out.weight.double().tolist(), m.out.bias.double().tolist()
    Wd = m.direct.weight.double().tolist()
    total = 0.0
    for i in range(4):
        v = x[i].tolist()
        hid = [max(0.0, b1[h] + sum(W1[h][j] * v[j] for j in range(64) if deg[h] >= rank[j]))
               for h in range(200)]
        for d in range(64):
            logit = (b2[d] + sum(W2[d][h] * hid[h] for h in range(200) if rank[d] > deg[h])
                     + sum(Wd[d][j] * v[j] for j in range(64) if rank[d] > rank[j]))
            p = 1 / (1 + math.exp(-logit))
            total -= math.log(p) if v[d] == 1 else math.log(1 - p)
    want = total / (4 * 64)
    assert abs(float(t.loss(m, x[:4], y[:4]).detach()) - want) < 1e-5
    # autoregressive: output d's logit moves with pixel j only where j comes before d
    jac = torch.autograd.functional.jacobian(lambda v: m(v[None])[0], x[0])  # (64 out, 64 in)
    before = torch.tensor([[rank[d] > rank[j] for j in range(64)] for d in range(64)])
    assert float(jac[~before].abs().max()) == 0 and bool((jac[before] != 0).all())
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    with torch.no_grad():
        assert abs(float(t.loss(m, Xtr, ytr)) - t.train_loss(m)) < 1e-5
    # the teacher's conditionals in the task's order read its log-likelihood (the chain rule),
    # within sampling of the floor on the training images; the untrained model far above
    oracle = _MixtureConditionals()
    _, P, _, _ = _made_draws_by_hand()
    xd = Xtr.double()
    nll = float(-(torch.logsumexp(xd @ P.log().T + (1 - xd) @ (1 - P).log().T, 1)
                  - math.log(32)).mean()) / 64
    assert abs(t.train_loss(oracle) - nll) < 1e-9
    assert abs(nll - tasks._made_floor()) < 0.002 and abs(nll - 0.25221) < 1e-5
    name, value = t.test_metric(oracle)
    assert name == "test_nll" and abs(value - tasks._made_floor()) < 0.004
    assert t.train_loss(tasks.digits_made(0).model) > tasks._made_floor() + 0.4
    assert t.train_loss(tasks.digits_made(1).model) > tasks._made_floor() + 0.4
    assert t.steps == 300


def _hinge_draws_by_hand():
    """The hinge data's seed's draws, in order: Ω (64, 512) over the width 2, the phases, the
    uniforms that pick the noisy labels, the random labels."""
    g = torch.Generator().manual_seed(2072)
    W = torch.randn(64, 512, generator=g, dtype=torch.float64) / 2.0
    b = 2 * math.pi * torch.rand(512, generator=g, dtype=torch.float64)
    u = torch.rand(1200, generator=g)
    return W, b, u, torch.randint(0, 10, (1200,), generator=g)


def test_hinge_svm_data_are_random_fourier_features_with_noisy_labels():
    Ztr, ytr, Zte, yte = tasks._hinge_data()
    Xtr, ctr, Xte, cte = tasks._digits()
    assert Ztr.shape == (1200, 512) and Zte.shape == (597, 512) and Ztr.dtype == torch.float32
    W, b, u, r = _hinge_draws_by_hand()
    for X, Z in ((Xtr, Ztr), (Xte, Zte)):
        for i in (0, 7, 596):
            xi = X[i].double().tolist()
            for j in (0, 1, 300, 511):
                want = math.sqrt(2 / 512) * math.cos(sum(xi[k] * float(W[k, j]) for k in range(64))
                                                     + float(b[j]))
                assert abs(float(Z[i, j]) - want) < 1e-7
    # the features' inner products approximate the RBF kernel of width 2
    K = Ztr[:200].double() @ Ztr[:200].double().T
    exact = torch.exp(-torch.cdist(Xtr[:200].double(), Xtr[:200].double()) ** 2 / 8)
    assert float((K - exact).abs().mean()) < 0.05
    # the labels: a random one where the uniform is below 0.2, the digit's own elsewhere
    want = [int(r[i]) if float(u[i]) < 0.2 else int(ctr[i]) for i in range(1200)]
    assert ytr.tolist() == want and torch.equal(yte, cte)
    assert 0.17 < float((ytr != ctr).float().mean()) < 0.2  # a tenth of the random ones agree


def _hinge_dual_ascent(Z, y, lam, epochs):
    """Each class's binary SVM (one-vs-rest, no bias) by dual coordinate ascent (Hsieh et al.
    2008), float64 numpy: max Σα − ½‖Σ α_i s_i z_i‖² over 0 ≤ α_i ≤ C, C = 1/(10 n λ), scaled
    by λ. Returns the weights (10, 512), the primal objective and the dual's value."""
    Z = np.asarray(Z, dtype=np.float64)
    n, C = len(Z), 1 / (10 * len(Z) * lam)
    rng = np.random.default_rng(0)
    sq = (Z * Z).sum(1)
    Ws, primal, dual = [], 0.0, 0.0
    for k in range(10):
        s = np.where(np.asarray(y) == k, 1.0, -1.0)
        a, w = np.zeros(n), np.zeros(Z.shape[1])
        for _ in range(epochs):
            for i in rng.permutation(n):
                new = min(max(a[i] - (s[i] * (Z[i] @ w) - 1) / sq[i], 0.0), C)
                if new != a[i]:
                    w += (new - a[i]) * s[i] * Z[i]
                    a[i] = new
        primal += lam * (0.5 * w @ w + C * np.maximum(0, 1 - s * (Z @ w)).sum())
        dual += lam * (a.sum() - 0.5 * w @ w)
        Ws.append(w)
    return np.array(Ws), primal, dual


def test_hinge_svm_loss_is_the_penalised_hinge_by_hand_and_its_optimum_is_the_floor():
    Ztr, ytr, Zte, yte = tasks._hinge_data()
    t = tasks.hinge_svm(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 5120 and m.bias is None
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 512)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=g))
    W = m.weight.double().tolist()
    hinge = 0.0
    for i in range(32):
        zi = x[i].double().tolist()
        for k in range(10):
            f = sum(W[k][j] * zi[j] for j in range(512))
            hinge += max(0.0, 1 - (1 if int(y[i]) == k else -1) * f)
    want = hinge / 320 + 0.5 * 1e-4 * sum(v * v for row in W for v in row)
    assert abs(float(t.loss(m, x, y).detach()) - want) < 1e-5
    with torch.no_grad():
        assert abs(float(t.loss(m, Ztr, ytr)) - t.train_loss(m)) < 1e-5
    name, value = t.test_metric(m)
    scores = Zte.double() @ torch.tensor(W, dtype=torch.float64).T
    assert name == "test_acc" and value == float((scores.argmax(1) == yte).float().mean())
    t.loss(m, x, y).backward()
    assert float(m.weight.grad.abs().sum()) > 0
    # the floor: the dual's value bounds the optimum below and the primal's above (0.1228706,
    # found to a gap of 4e-12 with 400 epochs); the weights read the same through the task
    Ws, primal, dual = _hinge_dual_ascent(Ztr, ytr, 1e-4, epochs=40)
    assert dual <= 0.1228706 + 1e-7 and primal >= 0.1228706 - 1e-7 and primal - dual < 2e-4
    best = copy.deepcopy(m)
    with torch.no_grad():
        best.weight.copy_(torch.as_tensor(Ws))
    assert abs(t.train_loss(best) - primal) < 1e-6
    for mm in (m, tasks.hinge_svm(0).model, tasks.hinge_svm(1).model):
        assert t.train_loss(mm) > primal + 0.05
    assert t.train_loss(tasks.hinge_svm(1).model) > 0.12287 + 0.8
    assert t.steps == 222


def test_round_38_s_held_out_tasks_are_in_the_selection_of_round_39():
    for name in ("graph_gat", "conv_denoiser"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT
    assert len(tasks.SELECTION) == 75


def _gat_draws_by_hand():
    """The GAT data's seed's draws, in order: 6000 node pairs, the features (2000, 8), the teacher's
    w1 (16, 8), a1 (2, 2, 8), w2 (4, 16) and a2 (2, 1, 4), the label draws, the split. Returns the
    undirected edges (a set of (i, j), i < j), the features, the teacher's weights (float64 numpy,
    w1 over √8 and the attention vectors times 3) and the generator, there."""
    g = torch.Generator().manual_seed(2077)
    pairs = torch.randint(0, 2000, (6000, 2), generator=g).tolist()
    edges = {(min(a, b), max(a, b)) for a, b in pairs if a != b}
    X = torch.randn(2000, 8, generator=g)
    w = [torch.randn(shape, generator=g, dtype=torch.float64).numpy()
         for shape in ((16, 8), (2, 2, 8), (4, 16), (2, 1, 4))]
    w1, a1, w2, a2 = w[0] / math.sqrt(8), 3 * w[1], w[2], 3 * w[3]
    return edges, X, (w1, a1, w2, a2), g


def _gat_layer_by_hand(h, a, nbrs):
    """h (n, heads, f): each node i's sum over j in nbrs[i] of softmax_j(LeakyReLU_0.2(a_src·h_j +
    a_dst·h_i)) h_j, node by node."""
    out = np.zeros_like(h)
    for i, js in enumerate(nbrs):
        e = (h[js] * a[0]).sum(-1) + (h[i] * a[1]).sum(-1)  # (len(js), heads)
        e = np.where(e > 0, e, 0.2 * e)
        w = np.exp(e - e.max(0))
        out[i] = ((w / w.sum(0))[..., None] * h[js]).sum(0)
    return out


def _gat_by_hand(X, w1, a1, b1, w2, a2, b2, nbrs):
    """The two layers' logits (n, 4) in float64: ELU between them, 2 heads of 8 then one of 4."""
    n = len(X)
    h = _gat_layer_by_hand((np.asarray(X, np.float64) @ w1.T).reshape(n, 2, 8), a1, nbrs)
    h = h.reshape(n, 16) + b1
    h = np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
    return _gat_layer_by_hand((h @ w2.T)[:, None], a2, nbrs)[:, 0] + b2


def _gat_neighbours(edges):
    nbrs = [[i] for i in range(2000)]
    for i, j in sorted(edges):
        nbrs[i].append(j)
        nbrs[j].append(i)
    return [np.array(js) for js in nbrs]


def test_graph_gat_data_are_a_random_graph_and_a_teacher_gat_s_label_draws():
    src, dst, X, labels, probs, tr, te = tasks._gat_graph()
    edges, Xh, (w1, a1, w2, a2), g = _gat_draws_by_hand()
    assert torch.equal(X, Xh) and X.shape == (2000, 8)
    # every undirected pair both ways and every node's self-loop, nothing else
    directed = sorted(zip(src.tolist(), dst.tolist()))
    want = sorted([(i, j) for i, j in edges] + [(j, i) for i, j in edges]
                  + [(i, i) for i in range(2000)])
    assert directed == want and len(edges) == 5986
    assert 6.9 < len(src) / 2000 < 7.1  # about 6 neighbours and the node itself
    # the teacher's probabilities, its b2 the logits' mean over the nodes negated
    nbrs = _gat_neighbours(edges)
    logits = _gat_by_hand(X, w1, a1, np.zeros(16), w2, a2, np.zeros(4), nbrs)
    logits = logits - logits.mean(0)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert float(np.abs(probs.numpy() - p).max()) < 1e-12 and probs.dtype == torch.float64
    # the attention is far from uniform: the first layer's weights on a node's edges
    assert float(p.max(1).mean()) > 0.55 and min(np.bincount(p.argmax(1))) > 100
    # each label one draw from its node's probabilities, then the split
    assert labels.tolist() == torch.multinomial(torch.as_tensor(p), 1, generator=g)[:, 0].tolist()
    perm = torch.randperm(2000, generator=g)
    assert torch.equal(tr, perm[:1500]) and torch.equal(te, perm[1500:])
    # the labels follow the teacher: their mean log-probability near its mean entropy's negative
    logp = np.log(p[np.arange(2000), labels.numpy()])
    ent = -(p * np.log(p)).sum(1)
    assert abs(float(-logp.mean() - ent.mean())) < 3 * float(logp.std()) / math.sqrt(2000)


def test_graph_gat_floor_is_the_teacher_s_entropy_on_the_training_nodes():
    _, _, _, labels, probs, tr, _ = tasks._gat_graph()
    p = probs[tr].tolist()
    ent = sum(-sum(q * math.log(q) for q in row) for row in p) / 1500
    assert abs(tasks._gat_floor() - ent) < 1e-12 and abs(ent - 0.704448) < 1e-6
    # Gibbs: any other prediction's expected cross-entropy to the teacher's draws is higher
    P = probs[tr]
    for q in (torch.softmax(2 * P.log(), 1), torch.softmax(0.5 * P.log(), 1),
              torch.full_like(P, 0.25), P.roll(1, 0)):
        assert float(-(P * q.log()).sum(1).mean()) > ent + 0.01
    # the teacher's own cross-entropy on the drawn training labels, within sampling of the floor
    ce = float(-P.log()[torch.arange(1500), labels[tr]].mean())
    assert abs(ce - ent) < 0.02 and abs(ce - 0.710912) < 1e-5


def test_graph_gat_loss_is_the_cross_entropy_of_a_two_layer_gat_by_hand():
    src, dst, X, labels, probs, tr, te = tasks._gat_graph()
    t = tasks.graph_gat(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 252
    x, y = next(iter(t.batches()))
    assert x.shape == (50, ) and torch.equal(y, labels[x]) and set(x.tolist()) <= set(tr.tolist())
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    par = {n: p.detach().double().numpy() for n, p in m.named_parameters()}
    nbrs = _gat_neighbours(_gat_draws_by_hand()[0])
    logits = _gat_by_hand(X, par["w1.weight"], par["a1"], par["b1"], par["w2.weight"], par["a2"],
                          par["b2"], nbrs)
    xs, ys = x.numpy(), y.numpy()
    lse = np.log(np.exp(logits[xs]).sum(1))
    want = float((lse - logits[xs, ys]).mean())
    assert abs(float(t.loss(m, x, y).detach()) - want) < 1e-5
    with torch.no_grad():
        assert float((m(torch.arange(2000)).double() - torch.as_tensor(logits)).abs().max()) < 1e-4
        assert abs(float(t.loss(m, tr, labels[tr])) - t.train_loss(m)) < 1e-5
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    name, value = t.test_metric(m)
    lse = np.log(np.exp(logits[te.numpy()]).sum(1))
    want = float((lse - logits[te.numpy(), labels[te].numpy()]).mean())
    assert name == "test_nll" and abs(value - want) < 1e-5
    # the teacher loaded into the model reads its own cross-entropy, near the floor
    _, _, (w1, a1, w2, a2), _ = _gat_draws_by_hand()
    with torch.no_grad():
        for p, v in ((m.w1.weight, w1), (m.a1, a1), (m.w2.weight, w2), (m.a2, a2)):
            p.copy_(torch.as_tensor(v))
        m.b1.zero_()
        m.b2.zero_()
        m.b2.copy_(-m(torch.arange(2000)).mean(0))
    assert abs(t.train_loss(m) - 0.710912) < 1e-4
    for seed in (0, 1):
        assert t.train_loss(tasks.graph_gat(seed).model) > tasks._gat_floor() + 0.6
    assert t.steps == 300


def test_conv_denoiser_data_are_gaussian_images_with_the_digits_moments_plus_noise():
    Xtr, ytr, Xte, yte = tasks._denoise_data()
    assert Xtr.shape == ytr.shape == (9600, 1, 8, 8) and Xte.shape == yte.shape == (2000, 1, 8, 8)
    assert Xtr.dtype == ytr.dtype == torch.float32
    digits = tasks._digits()[0].double().numpy()
    mu = digits.mean(0)
    g = torch.Generator().manual_seed(2078)
    z = torch.randn(11600, 1200, generator=g, dtype=torch.float64).numpy()
    noise = torch.randn(11600, 64, generator=g, dtype=torch.float64).numpy()
    X, y = torch.cat([Xtr, Xte]).numpy(), torch.cat([ytr, yte]).numpy()
    for i in (0, 1, 9599, 9600, 11599):
        for r, c in ((0, 0), (2, 5), (7, 3)):  # pixel (r, c) is the digit's 8r + c
            d = 8 * r + c
            clean = mu[d] + sum(z[i, k] * (digits[k, d] - mu[d]) for k in range(1200)) / 1199 ** 0.5
            assert abs(y[i, 0, r, c] - clean) < 1e-6
            assert abs(X[i, 0, r, c] - (clean + 0.5 * noise[i, d])) < 1e-6
    # the clean images' moments are the digits' (sampling aside), the noise's sd 0.5
    flat, noisy = y.reshape(-1, 64).astype(np.float64), X.reshape(-1, 64).astype(np.float64)
    assert np.abs(flat.mean(0) - mu).max() < 0.02
    assert np.abs(np.cov(flat.T) - np.cov(digits.T)).max() < 0.02
    assert abs((noisy - flat).std() - 0.5) < 0.002 and abs((noisy - flat).mean()) < 0.002


def test_conv_denoiser_floor_is_the_wiener_filter_s_error_per_pixel():
    digits = tasks._digits()[0].double()
    S = torch.cov(digits.T)
    W = torch.linalg.solve(S + 0.25 * torch.eye(64, dtype=torch.float64), S).T  # Σ(Σ + σ²I)⁻¹
    floor = float(torch.trace(S - W @ S)) / 64
    assert abs(tasks._denoise_floor() - floor) < 1e-12 and abs(floor - 0.0368673) < 1e-7
    # between no noise and the noisy input's own error, below guessing the mean image
    assert 0.01 < floor < min(0.25, float(torch.trace(S)) / 64)
    Xtr, ytr, Xte, yte = tasks._denoise_data()
    mu = digits.mean(0)
    for X, y, tol in ((Xtr, ytr, 3e-4), (Xte, yte, 6e-4)):
        err = (mu + (X.double().view(-1, 64) - mu) @ W.T) - y.double().view(-1, 64)
        assert abs(float((err ** 2).mean()) - floor) < tol
        # its error uncorrelated with the input (orthogonality), sampling aside
        assert float((err.T @ (X.double().view(-1, 64) - mu)).abs().max()) < len(X) ** 0.5
        for V in (0.9 * W, W + 0.05 * torch.eye(64, dtype=torch.float64)):
            other = (mu + (X.double().view(-1, 64) - mu) @ V.T) - y.double().view(-1, 64)
            assert float((other ** 2).mean()) > float((err ** 2).mean()) + 1e-4
    # the least-squares affine map fitted to the training pairs themselves gains only sampling's
    A = torch.cat([Xtr.double().view(-1, 64), torch.ones(9600, 1, dtype=torch.float64)], 1)
    fit = A @ torch.linalg.lstsq(A, ytr.double().view(-1, 64)).solution
    assert floor - 0.001 < float(((fit - ytr.double().view(-1, 64)) ** 2).mean()) < floor


def _conv_by_hand(x, w, b, stride=1):
    """3×3 convolution of x (C, H, W), zero padding 1: out[o, i, j] = b[o] + Σ w[o, c, ki, kj]
    x[c, s·i + ki − 1, s·j + kj − 1]."""
    C, H, _ = x.shape
    xp = np.zeros((C, H + 2, H + 2))
    xp[:, 1:-1, 1:-1] = x
    n = (H - 1) // stride + 1
    out = np.zeros((len(w), n, n)) + b[:, None, None]
    for i in range(n):
        for j in range(n):
            patch = xp[:, stride * i:stride * i + 3, stride * j:stride * j + 3]
            out[:, i, j] += (w * patch).sum((1, 2, 3))
    return out


def _conv_transpose_by_hand(x, w, b):
    """Transposed 4×4 convolution, stride 2, padding 1, of x (C, 4, 4), w (C, O, 4, 4): each
    input pixel (i, j) adds w[c, :, ki, kj] x[c, i, j] at (2i + ki − 1, 2j + kj − 1) of 8×8."""
    full = np.zeros((w.shape[1], 10, 10))
    for i in range(4):
        for j in range(4):
            full[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum("c,cokl->okl", x[:, i, j], w)
    return full[:, 1:9, 1:9] + b[:, None, None]


def test_conv_denoiser_loss_is_the_mse_per_pixel_of_an_encoder_decoder_by_hand():
    Xtr, ytr, Xte, yte = tasks._denoise_data()
    t = tasks.conv_denoiser(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 13297
    x, y = next(iter(t.batches()))
    assert x.shape == y.shape == (32, 1, 8, 8)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    par = {n: p.detach().double().numpy() for n, p in m.named_parameters()}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    total = 0.0
    for i in range(4):
        skip = relu(_conv_by_hand(x[i].double().numpy(), par["enc.weight"], par["enc.bias"]))
        low = relu(_conv_by_hand(skip, par["down.weight"], par["down.bias"], stride=2))
        assert low.shape == (32, 4, 4)
        up = relu(_conv_transpose_by_hand(low, par["up.weight"], par["up.bias"]))
        out = _conv_by_hand(np.concatenate([up, skip]), par["out.weight"], par["out.bias"])
        total += float(((out[0] - y[i, 0].double().numpy()) ** 2).sum())
    want = total / (4 * 64)
    assert abs(float(t.loss(m, x[:4], y[:4]).detach()) - want) < 1e-5
    with torch.no_grad():
        assert abs(float(t.loss(m, Xtr, ytr)) - t.train_loss(m)) < 1e-5
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    name, value = t.test_metric(m)
    with torch.no_grad():
        assert name == "test_mse" and abs(value - float(((m(Xte) - yte) ** 2).mean())) < 1e-5
    # the Wiener filter reads its error on the training pairs, near the floor; the untrained
    # models far above it
    digits = tasks._digits()[0].double()
    S, mu = torch.cov(digits.T), digits.mean(0)
    W = torch.linalg.solve(S + 0.25 * torch.eye(64, dtype=torch.float64), S).T
    wiener = lambda X: (mu + (X.double().view(-1, 64) - mu) @ W.T).view(-1, 1, 8, 8)  # noqa: E731
    assert abs(t.train_loss(wiener) - 0.0369128) < 1e-6
    for seed in (0, 1):
        assert t.train_loss(tasks.conv_denoiser(seed).model) > tasks._denoise_floor() + 0.05
    assert t.steps == 300


def test_round_42_s_held_out_tasks_are_in_the_selection_of_round_43():
    for name in ("phase_retrieval", "markov_mlm"):
        assert name in tasks.SELECTION and name not in tasks.HELD_OUT
    assert len(tasks.SELECTION) == 75


def _phase_draws_by_hand():
    """The phase data's seed's draws, in order: the signal (normalised here), the measurement
    vectors (11600, 128; rounded to float32 and back), the noise (11600,). float64 numpy."""
    g = torch.Generator().manual_seed(2079)
    x = torch.randn(128, generator=g, dtype=torch.float64).numpy()
    x = x / math.sqrt(sum(v * v for v in x))
    A = torch.randn(11600, 128, generator=g, dtype=torch.float64).float().double().numpy()
    return x, A, torch.randn(11600, generator=g, dtype=torch.float64).numpy()


def test_phase_retrieval_data_are_squared_gaussian_projections_plus_noise():
    Atr, ytr, Ate, cte, signal = tasks._phase_data()
    assert Atr.shape == (9600, 128) and ytr.shape == (9600,)
    assert Ate.shape == (2000, 128) and cte.shape == (2000,)
    assert Atr.dtype == ytr.dtype == Ate.dtype == cte.dtype == torch.float32
    x, A, noise = _phase_draws_by_hand()
    assert float(np.abs(signal.numpy() - x).max()) < 1e-15 and signal.dtype == torch.float64
    assert np.array_equal(np.concatenate([Atr.numpy(), Ate.numpy()]).astype(np.float64), A)
    for i in (0, 1, 4321, 9599, 9600, 11599):  # y = (Σ_k a_k x*_k)² + 0.5 ε, by explicit sums
        clean = sum(A[i, k] * x[k] for k in range(128)) ** 2
        if i < 9600:
            assert abs(float(ytr[i]) - (clean + 0.5 * noise[i])) < 2e-6 * (1 + clean)
        else:
            assert abs(float(cte[i - 9600]) - clean) < 2e-6 * (1 + clean)
    # a ~ N(0, I), aᵀx* ~ N(0, 1) (‖x*‖ = 1), the training targets' noise N(0, 0.5²)
    assert float(np.abs(A.mean(0)).max()) < 0.05 and abs(float(A.std()) - 1) < 0.005
    proj = A @ x
    assert abs(float(proj.var()) - 1) < 0.05 and abs(float((proj ** 2).mean()) - 1) < 0.05
    r = ytr.double().numpy() - proj[:9600] ** 2
    assert abs(float(r.std()) - 0.5) < 0.01 and abs(float(r.mean())) < 0.015
    assert float(np.abs(r - 0.5 * noise[:9600]).max()) < 1e-5


def test_phase_retrieval_floor_is_the_noise_variance_and_the_quartic_s_expectation_by_hand():
    assert tasks._phase_floor() == 0.25
    x, A, noise = _phase_draws_by_hand()
    Atr, ytr, _, _, _ = tasks._phase_data()
    A64, y = Atr.double().numpy(), ytr.double().numpy()
    truth = float((((A64 @ x) ** 2 - y) ** 2).mean())
    assert abs(truth - 0.245336) < 1e-6  # the noise's own mean square, within sampling of 0.25
    assert abs(truth - 0.25) < 3 * 0.25 * math.sqrt(2) / math.sqrt(9600)
    # E((aᵀv)² − (aᵀx*)²)² = 3‖v‖⁴ + 3 − 2‖v‖² − 4(vᵀx*)² for a ~ N(0, I): ≥ 0, 0 only at ±x*,
    # checked against the mean over all 11600 measurements, sampling aside
    g = torch.Generator().manual_seed(11)
    r = lambda: torch.randn(128, generator=g, dtype=torch.float64).numpy()  # noqa: E731
    u = r()
    for v in (u / np.linalg.norm(u), x + 0.1 * r() / math.sqrt(128), 0.5 * x + 0.3 * r(),
              0.6 * r() / math.sqrt(128), -x):
        n2, c = float(v @ v), float(v @ x)
        want = 3 * n2 * n2 + 3 - 2 * n2 - 4 * c * c
        e = ((A @ v) ** 2 - (A @ x) ** 2) ** 2
        assert abs(float(e.mean()) - want) <= 4 * float(e.std()) / math.sqrt(len(e)) + 1e-12
        assert want >= 0 and (want > 0.01 or np.allclose(np.abs(v), np.abs(x)))
    # the saddles: orthogonal to x*, the expectation is least at ‖v‖² = 1/3, 3 − 1/3 + 0.25
    for n2 in (0.2, 0.3, 0.4, 0.5):
        assert 3 * n2 * n2 + 3 - 2 * n2 > 3 - 1 / 3
    # the least-squares fit to the training measurements (Gauss-Newton from x*) gains only the
    # noise it can follow: about σ²·128/9600 below the truth, far above FLOOR
    v = x.copy()
    for _ in range(6):
        p = A64 @ v
        v = v - np.linalg.lstsq(2 * p[:, None] * A64, p ** 2 - y, rcond=None)[0]
    fit = float((((A64 @ v) ** 2 - y) ** 2).mean())
    assert truth - 0.006 < fit < truth - 0.001 and fit > 20 * tasks.FLOOR


def test_phase_retrieval_loss_is_the_squared_error_of_squared_projections_by_hand():
    Atr, ytr, Ate, cte, signal = tasks._phase_data()
    t = tasks.phase_retrieval(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 128
    torch.manual_seed(0)
    assert torch.equal(m.x.detach(), torch.randn(128) / math.sqrt(128))
    x, y = next(iter(t.batches()))
    assert x.shape == (32, 128) and y.shape == (32,)
    rows = {tuple(a) for a in Atr.tolist()}
    assert all(tuple(a) in rows for a in x.tolist())
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        m.x.add_(0.3 * torch.randn(128, generator=g))
    v = m.x.detach().double().tolist()
    xs, ys = x.double().tolist(), y.double().tolist()
    proj = [sum(a[k] * v[k] for k in range(128)) for a in xs]
    want = sum((p * p - b) ** 2 for p, b in zip(proj, ys)) / 32
    L = t.loss(m, x, y)
    assert abs(float(L.detach()) - want) < 1e-5 * (1 + want)
    # its gradient: (4/32) Σ_i ((aᵢᵀv)² − yᵢ)(aᵢᵀv) aᵢ
    L.backward()
    grad = [4 / 32 * sum((p * p - b) * p * a[k] for p, b, a in zip(proj, ys, xs))
            for k in range(128)]
    assert float((m.x.grad.double() - torch.tensor(grad)).abs().max()) < 1e-4 * (
        1 + max(map(abs, grad)))
    V = np.array(v)
    full = float((((Atr.double().numpy() @ V) ** 2 - ytr.double().numpy()) ** 2).mean())
    assert abs(t.train_loss(m) - full) < 1e-5 * full
    name, value = t.test_metric(m)
    clean = float((((Ate.double().numpy() @ V) ** 2 - cte.double().numpy()) ** 2).mean())
    assert name == "test_clean_mse" and abs(value - clean) < 1e-5 * clean
    # the sign is lost: −x reads the same
    with torch.no_grad():
        m.x.neg_()
    assert abs(t.train_loss(m) - full) < 1e-5 * full
    # the signal itself reads the noise's mean square and no test error; the untrained models
    # far above the floor
    with torch.no_grad():
        m.x.copy_(signal)
    assert abs(t.train_loss(m) - 0.245336) < 1e-5 and t.test_metric(m)[1] < 1e-9
    for seed in (0, 1):
        assert t.train_loss(tasks.phase_retrieval(seed).model) > tasks._phase_floor() + 3
    assert t.steps == 300


@functools.lru_cache(maxsize=1)
def _mlm_draws_by_hand():
    """The MLM data's seed's draws, in order, in numpy: P the softmax of twice 8×8 normals by
    explicit exps, π by power iteration (not a solve), the first tokens from π, each next one
    from its predecessor's row, then the uniforms whose 4 smallest in a row are its masks. (P,
    π, the sequences (10600, 20), each row's masked positions, X and y as _mlm_data's)"""
    g = torch.Generator().manual_seed(2080)
    e = np.exp(2 * torch.randn(8, 8, generator=g, dtype=torch.float64).numpy())
    P = e / e.sum(1, keepdims=True)
    pi = np.full(8, 1 / 8)
    for _ in range(3000):
        pi = pi @ P
    seq = np.empty((10600, 20), np.int64)
    seq[:, 0] = torch.multinomial(torch.as_tensor(pi), 10600, replacement=True, generator=g)
    for t in range(1, 20):
        seq[:, t] = torch.multinomial(torch.as_tensor(P[seq[:, t - 1]]), 1, generator=g)[:, 0]
    u = torch.rand(10600, 20, generator=g).tolist()
    masks = [sorted(range(20), key=row.__getitem__)[:4] for row in u]
    X, y = seq.copy(), np.full((10600, 20), -100)
    for i, ts in enumerate(masks):
        for t in ts:
            X[i, t], y[i, t] = 8, seq[i, t]
    return P, pi, seq, masks, X, y


@functools.lru_cache(maxsize=1)
def _mlm_posteriors_by_hand():
    """Each training sequence's masked tokens' distributions given its visible ones, from the
    chain's Markov property alone: with the nearest visible tokens a, i steps to the left, and b,
    j steps to the right, p(token) ∝ (Pⁱ)[a, token] (Pʲ)[token, b]; π in place of the first
    where none is to the left, 1 for the second where none is to the right. (9600, 4, 8), in
    each row's masks' order."""
    P, pi, _, masks, X, _ = _mlm_draws_by_hand()
    powers = [np.eye(8)]
    for _ in range(20):
        powers.append(powers[-1] @ P)
    out = np.empty((9600, 4, 8))
    for i in range(9600):
        row = X[i]
        for k, t in enumerate(masks[i]):
            left = [s for s in range(t) if row[s] != 8]
            right = [s for s in range(t + 1, 20) if row[s] != 8]
            p = powers[t - left[-1]][row[left[-1]]] if left else pi
            if right:
                p = p * powers[right[0] - t][:, row[right[0]]]
            out[i, k] = p / p.sum()
    return out


def test_markov_mlm_data_are_a_random_chain_s_sequences_with_four_tokens_masked():
    Xtr, ytr, Xte, yte, P, pi = tasks._mlm_data()
    assert Xtr.shape == ytr.shape == (9600, 20) and Xte.shape == yte.shape == (1000, 20)
    assert Xtr.dtype == ytr.dtype == torch.long and P.dtype == pi.dtype == torch.float64
    Ph, pih, seq, masks, X, y = _mlm_draws_by_hand()
    assert float(np.abs(P.numpy() - Ph).max()) < 1e-15
    assert float(np.abs(pi.numpy() - pih).max()) < 1e-14
    assert float(np.abs(pih @ Ph - pih).max()) < 1e-15 and abs(float(pih.sum()) - 1) < 1e-14
    assert np.array_equal(torch.cat([Xtr, Xte]).numpy(), X)
    assert np.array_equal(torch.cat([ytr, yte]).numpy(), y)
    # four masks a row, each target the token it hides, nothing else a target
    assert all(len(set(ts)) == 4 for ts in masks)
    assert ((X == 8).sum(1) == 4).all() and ((y != -100) == (X == 8)).all()
    assert (y[X == 8] == seq[X == 8]).all() and (X[X != 8] == seq[X != 8]).all()
    # the draws follow the chain: every position's frequencies near π (stationary), each
    # token's successors' near its row of P; the masks uniform over the positions
    for t in (0, 7, 19):
        assert float(np.abs(np.bincount(seq[:, t], minlength=8) / 10600 - pih).max()) < 0.015
    pairs = np.zeros((8, 8))
    np.add.at(pairs, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
    assert float(np.abs(pairs / pairs.sum(1, keepdims=True) - Ph).max()) < 0.02
    assert float(np.abs((X == 8).mean(0) - 0.2).max()) < 0.015
    # the rows' entropies 0.09–1.68 nats, below log 8 = 2.08: some tokens nearly fix their
    # successor, others leave it open
    rows = -(Ph * np.log(Ph)).sum(1)
    assert 0.09 < rows.min() < 0.1 and 1.6 < rows.max() < 1.7


def test_markov_mlm_floor_is_the_masked_tokens_posterior_entropy_by_hand():
    P, pi, seq, masks, X, _ = _mlm_draws_by_hand()
    post = _mlm_posteriors_by_hand()
    ent = float(-(post * np.log(post)).sum(-1).mean())
    assert abs(tasks._mlm_floor() - ent) < 1e-12 and abs(ent - 0.991807) < 1e-6
    # the task's forward-backward agrees at every masked position
    fb = tasks._mlm_posterior(torch.as_tensor(X[:9600]), torch.as_tensor(P), torch.as_tensor(pi))
    idx = np.array(masks[:9600])
    got = fb.numpy()[np.arange(9600)[:, None], idx]
    assert float(np.abs(got - post).max()) < 1e-12
    # above FLOOR, and below what one side (the chain's entropy rate) or none (π's) would give
    rate = float(pi @ -(P * np.log(P)).sum(1))
    H_pi = float(-(pi * np.log(pi)).sum())
    assert 50 * tasks.FLOOR < ent < rate - 0.25 and rate < H_pi - 0.5
    assert abs(rate - 1.313) < 1e-3 and abs(H_pi - 1.9332) < 1e-4
    # Gibbs: other predictions' expected cross-entropy to the draws is higher: π, the posterior
    # sharpened or flattened, the left side's prediction alone
    powers = [np.eye(8)]
    for _ in range(20):
        powers.append(powers[-1] @ P)
    left = np.empty_like(post)
    for i in range(9600):
        for k, t in enumerate(masks[i]):
            s = [s for s in range(t) if X[i, s] != 8]
            left[i, k] = powers[t - s[-1]][X[i, s[-1]]] if s else pi
    sharp, flat = post ** 2, np.sqrt(post)
    for q in (np.broadcast_to(pi, post.shape), sharp / sharp.sum(-1, keepdims=True),
              flat / flat.sum(-1, keepdims=True), left):
        assert float(-(post * np.log(q)).sum(-1).mean()) > ent + 0.01
    # the posterior's own cross-entropy on the drawn tokens, within sampling of the floor
    logp = np.log(post[np.arange(9600)[:, None], np.arange(4), seq[np.arange(9600)[:, None], idx]])
    assert abs(float(-logp.mean()) - 0.990830) < 1e-6
    assert abs(float(-logp.mean()) - ent) < 3 * float(logp.std()) / math.sqrt(logp.size)


def _layer_norm_by_hand(h, w, b):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-5) * w + b


def _mlm_logits_by_hand(par, X):
    """The two blocks' logits (n, 20, 8) in float64 numpy: embeddings plus positions; per block
    h += attention(LN(h)) (2 heads of 16, scores q·k/4 softmaxed over all 20 positions: no causal
    mask), then h += W₂ GELU(W₁ LN(h)) (GELU by erf); a final LN and the head."""
    from scipy.special import erf
    h = par["tok.weight"][X] + par["pos"]
    for b in range(2):
        z = _layer_norm_by_hand(h, par[f"ln1.{b}.weight"], par[f"ln1.{b}.bias"])
        q = z @ par[f"attn.{b}.q.weight"].T + par[f"attn.{b}.q.bias"]
        kv = z @ par[f"attn.{b}.kv.weight"].T + par[f"attn.{b}.kv.bias"]
        k, v = kv[..., :32], kv[..., 32:]
        heads = []
        for j in (slice(0, 16), slice(16, 32)):
            s = np.einsum("ntd,nsd->nts", q[..., j], k[..., j]) / 4
            w = np.exp(s - s.max(-1, keepdims=True))
            heads.append(np.einsum("nts,nsd->ntd", w / w.sum(-1, keepdims=True), v[..., j]))
        h = h + np.concatenate(heads, -1) @ par[f"attn.{b}.proj.weight"].T
        h = h + par[f"attn.{b}.proj.bias"]
        z = _layer_norm_by_hand(h, par[f"ln2.{b}.weight"], par[f"ln2.{b}.bias"])
        u = z @ par[f"mlp.{b}.0.weight"].T + par[f"mlp.{b}.0.bias"]
        u = 0.5 * u * (1 + erf(u / math.sqrt(2)))
        h = h + u @ par[f"mlp.{b}.2.weight"].T + par[f"mlp.{b}.2.bias"]
    return _layer_norm_by_hand(h, par["ln.weight"], par["ln.bias"]) @ par["head.weight"].T + par[
        "head.bias"]


def _masked_ce_by_hand(logits, y):
    """The mean over the positions whose target is not −100 of log Σ exp(row) − row[target]."""
    total, count = 0.0, 0
    for i, t in zip(*np.nonzero(y != -100)):
        row = logits[i, t]
        top = row.max()
        total += top + math.log(float(np.exp(row - top).sum())) - row[y[i, t]]
        count += 1
    return total / count


def test_markov_mlm_loss_is_the_masked_cross_entropy_of_a_bidirectional_transformer_by_hand():
    Xtr, ytr, Xte, yte, _, _ = tasks._mlm_data()
    t = tasks.markov_mlm(0)
    m = t.model
    assert sum(p.numel() for p in m.parameters()) == 26664
    x, y = next(iter(t.batches()))
    assert x.shape == y.shape == (32, 20) and x.dtype == torch.long
    rows = {tuple(r) for r in Xtr.tolist()}
    assert all(tuple(r) in rows for r in x.tolist())
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    par = {n: p.detach().double().numpy() for n, p in m.named_parameters()}
    logits = _mlm_logits_by_hand(par, x.numpy())
    with torch.no_grad():
        assert float((m(x).double() - torch.as_tensor(logits)).abs().max()) < 1e-4
    want = _masked_ce_by_hand(logits, y.numpy())
    assert abs(float(t.loss(m, x, y).detach()) - want) < 1e-5
    with torch.no_grad():
        assert abs(float(t.loss(m, Xtr, ytr)) - t.train_loss(m)) < 1e-5
    # bidirectional: a change of the last token reaches the first position's logits
    x2 = x.clone()
    x2[:, 19] = (x2[:, 19] + 1) % 9
    with torch.no_grad():
        assert float((m(x2) - m(x)).abs().amax((0, 2)).min()) > 0
    t.loss(m, x, y).backward()
    for name, p in m.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
    name, value = t.test_metric(m)
    want = _masked_ce_by_hand(_mlm_logits_by_hand(par, Xte.numpy()), yte.numpy())
    assert name == "test_nll" and abs(value - want) < 1e-5
    # the exact posterior as logits reads its cross-entropy on the drawn training tokens (the
    # visible positions' logits, which no target reads, left at 0); the untrained models far
    # above the floor
    _, _, _, masks, X, _ = _mlm_draws_by_hand()
    bayes = np.zeros((9600, 20, 8))
    bayes[np.arange(9600)[:, None], np.array(masks[:9600])] = np.log(_mlm_posteriors_by_hand())
    assert abs(t.train_loss(lambda X: torch.as_tensor(bayes)) - 0.990830) < 1e-6
    for seed in (0, 1):
        assert t.train_loss(tasks.markov_mlm(seed).model) > tasks._mlm_floor() + 1.0
    assert t.steps == 300
