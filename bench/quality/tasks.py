"""The CPU-sized tasks of docs/quality.md. Nothing is downloaded: digits and the synthetic sets come
with scikit-learn (or numpy), the text corpus is generated from a seeded stochastic grammar.

Each task: ``make(seed)`` returns a Task with
  model (nn.Module, initialised from the seed), batches() (the training batches of the whole run,
  in order, from the seed), train_loss() (the loss on the whole training set, float64),
  test_metric() (name, value), full_batch (bool).
Budgets are chosen so that no method drives the training loss near 0 (see docs/quality.md).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Task:
    name: str
    model: nn.Module
    batches: Callable          # () -> iterator of (x, y)
    loss: Callable             # (model, x, y) -> scalar loss tensor (what the optimizer sees)
    train_loss: Callable       # (model) -> float, whole training set
    test_metric: Callable      # (model) -> (name, value)
    steps: int
    full_batch: bool = False


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(1234)  # one fixed split for every seed
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1200], perm[1200:]
    return X[tr], y[tr], X[te], y[te]


def _minibatches(n, batch, epochs, seed):
    g = torch.Generator().manual_seed(10_000 + seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch + 1, batch):  # drop the ragged last batch
            yield perm[i:i + batch]


def _ce(model, x, y):
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def _eval_ce(model, X, y):
    return float(F.cross_entropy(model(X).double(), y))


@torch.no_grad()
def _acc(model, X, y):
    return float((model(X).argmax(-1) == y).float().mean())


def _mse(model, x, y):
    return F.mse_loss(model(x), y)


@torch.no_grad()
def _eval_mse(model, X, y):
    return float(F.mse_loss(model(X).double(), y.double()))


def _array_task(name, model, data, seed, batch, epochs, loss=_ce, full_loss=_eval_ce,
                metric=("test_acc", _acc)) -> Task:
    """Mini-batch training on in-memory (Xtr, ytr, Xte, yte): the train loss is ``full_loss`` on
    the whole training set, the test metric ``metric`` on the test set."""
    Xtr, ytr, Xte, yte = data
    metric_name, metric_fn = metric

    def batches():
        for idx in _minibatches(len(ytr), batch, epochs, seed):
            yield Xtr[idx], ytr[idx]

    steps = epochs * (len(ytr) // batch)
    return Task(name, model, batches, loss, lambda m: full_loss(m, Xtr, ytr),
                lambda m: (metric_name, metric_fn(m, Xte, yte)), steps)


def _loss_and_full(fn, head=lambda out: out, penalty=None):
    """A task's batch loss and its whole-set loss (float64, no grad) from one loss function
    ``fn(pred, y)``, the prediction ``head(model(x))``, plus ``penalty(weights)`` where given: the
    model's weight matrices (its parameters of two or more dimensions; biases unpenalised) in the
    prediction's dtype."""
    def value(m, pred, y):
        out = fn(pred, y)
        if penalty is None:
            return out
        return out + penalty([p.to(pred.dtype) for p in m.parameters() if p.dim() > 1])

    def loss(m, x, y):
        return value(m, head(m(x)), y)

    @torch.no_grad()
    def full(m, X, y):
        return float(value(m, head(m(X)).double(), y))

    return loss, full


def _digits_task(name, model, seed, batch, epochs, reshape=None):
    Xtr, ytr, Xte, yte = _digits()
    if reshape is not None:
        Xtr, Xte = reshape(Xtr), reshape(Xte)
    return _array_task(name, model, (Xtr, ytr, Xte, yte), seed, batch, epochs)


def digits_mlp(seed: int) -> Task:
    """64-16-10 ReLU MLP on sklearn digits, batch 32, 6 epochs (222 steps)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    return _digits_task("digits_mlp", model, seed, batch=32, epochs=6)


def _digits_cnn_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    return _digits_task(name, model, seed, batch=32, epochs=epochs,
                        reshape=lambda X: X.reshape(-1, 1, 8, 8))


def digits_cnn(seed: int) -> Task:
    """Two 3×3 convolutions (4, 8 channels, the second stride 2) and a linear head, batch 32,
    3 epochs (111 steps)."""
    return _digits_cnn_task("digits_cnn", seed, epochs=3)


class _Softmax(nn.Module):
    def __init__(self, lam):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.lam = lam

    def forward(self, x):
        return self.lin(x)


def convex_softmax(seed: int) -> Task:
    """Full-batch multinomial logistic regression on digits with L2 1e-2 (strongly convex; the
    optimum's loss is ≈ 0.3), 100 steps. The loss is evaluated in float64."""
    torch.manual_seed(seed)
    model = _Softmax(lam=1e-2)
    Xtr, ytr, Xte, yte = _digits()
    Xd = Xtr.double()

    def loss(m, x, y):  # float64 objective at the fp32 parameters
        W, b = m.lin.weight.double(), m.lin.bias.double()
        return F.cross_entropy(x.double() @ W.T + b, y) + 0.5 * m.lam * (W * W).sum()

    def batches():
        for _ in range(100):
            yield Xd, ytr

    @torch.no_grad()
    def train_loss(m):
        return float(loss(m, Xd, ytr))

    return Task("convex_softmax", model, batches, loss, train_loss,
                lambda m: ("test_acc", _acc(m, Xte, yte)), 100, full_batch=True)


# ---------------------------------------------------------------------------------------------
# Character-level language model on a generated corpus
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _corpus():
    """~60k characters from a seeded stochastic grammar: 120 made-up words with Zipf frequencies,
    each word followed by one of 4 preferred successors (p = 0.7) or any word; sentences of 3–9
    words. The word transitions carry irreducible entropy, so no model reaches a loss near 0."""
    rng = np.random.default_rng(7)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = set()
    while len(words) < 120:
        words.add("".join(rng.choice(letters, size=rng.integers(2, 8))))
    words = sorted(words)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    succ = rng.integers(0, len(words), size=(len(words), 4))
    out, w = [], int(rng.choice(len(words), p=zipf))
    while sum(map(len, out)) < 60_000:
        n = int(rng.integers(3, 10))
        sent = []
        for _ in range(n):
            sent.append(words[w])
            w = int(succ[w, rng.integers(4)]) if rng.random() < 0.7 else int(rng.choice(len(words), p=zipf))
        out.append(" ".join(sent).capitalize() + ". ")
    text = "".join(out)
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def _gelu_mlp(d):
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class _Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = _gelu_mlp(d)
        self.heads = heads

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        sh = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class _CharLM(nn.Module):
    def __init__(self, vocab, d=32, heads=2, ctx=32):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(ctx, d))
        self.block, self.ln, self.head = _Block(d, heads), nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        return self.head(self.ln(self.block(x)))


def _char_task(name, make_model, seed, ctx=32, batch=16, steps=300) -> Task:
    """A next-character model on the generated corpus. Train loss: 256 fixed training windows;
    test: bits per character on 256 test windows."""
    torch.manual_seed(seed)
    tr, te, vocab = _corpus()
    model = make_model(vocab, ctx)

    def windows(data, starts):
        x = torch.stack([data[s:s + ctx] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + ctx + 1] for s in starts.tolist()])
        return x, y

    def lm_loss(m, x, y):
        return F.cross_entropy(m(x).reshape(-1, vocab), y.reshape(-1))

    def batches():
        g = torch.Generator().manual_seed(20_000 + seed)
        for _ in range(steps):
            yield windows(tr, torch.randint(0, len(tr) - ctx - 1, (batch,), generator=g))

    g = torch.Generator().manual_seed(99)
    eval_tr = windows(tr, torch.randint(0, len(tr) - ctx - 1, (256,), generator=g))
    eval_te = windows(te, torch.randint(0, len(te) - ctx - 1, (256,), generator=g))

    @torch.no_grad()
    def train_loss(m):
        return float(lm_loss(m, *eval_tr).double())

    @torch.no_grad()
    def test_metric(m):
        return "test_bpc", float(lm_loss(m, *eval_te)) / math.log(2)

    return Task(name, model, batches, lm_loss, train_loss, test_metric, steps)


def char_transformer(seed: int) -> Task:
    """1-block causal transformer (d 32, 2 heads, context 32) on the generated corpus, batch 16,
    300 steps."""
    return _char_task("char_transformer", lambda vocab, ctx: _CharLM(vocab, ctx=ctx), seed)


# ---------------------------------------------------------------------------------------------
# Added after the first choice of defaults, as a check; used in the second (docs/quality.md)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _friedman():
    from sklearn.datasets import make_friedman1
    X, y = make_friedman1(n_samples=1500, n_features=10, noise=1.0, random_state=7)
    y = (y - y[:1000].mean()) / y[:1000].std()  # standardised targets
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)[:, None]
    return X[:1000], y[:1000], X[1000:], y[1000:]


def _friedman_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 1))
    return _array_task(name, model, _friedman(), seed, batch=32, epochs=epochs, loss=_mse,
                       full_loss=_eval_mse, metric=("test_mse", _eval_mse))


def friedman_mlp(seed: int) -> Task:
    """MSE regression on sklearn's Friedman #1 (10 features, noise σ = 1), 10-32-32-1 tanh MLP,
    batch 32, 20 epochs (620 steps). Test metric: test MSE."""
    return _friedman_task("friedman_mlp", seed, epochs=20)


def _standardised_split(X, y, n_train):
    """Features standardised with the training part's statistics; (Xtr, ytr, Xte, yte) tensors."""
    X = (X - X[:n_train].mean(0)) / X[:n_train].std(0)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@functools.lru_cache(maxsize=1)
def _synthetic_classes():
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=2000, n_features=20, n_informative=10, n_redundant=5,
                               n_classes=4, n_clusters_per_class=2, flip_y=0.1, random_state=3)
    return _standardised_split(X, y, 1500)


def _synth_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))
    return _array_task(name, model, _synthetic_classes(), seed, batch=32, epochs=epochs)


def synth_mlp(seed: int) -> Task:
    """4-class classification on sklearn's make_classification (20 features, 10 % flipped
    labels), 20-64-64-4 ReLU MLP, batch 32, 8 epochs (368 steps). Test metric: accuracy."""
    return _synth_task("synth_mlp", seed, epochs=8)


class _CharRNN(nn.Module):
    """Embedding, one recurrent layer of ``cell`` (nn.GRU or nn.LSTM, d 48), linear read-out."""

    def __init__(self, vocab, cell, d=48):
        super().__init__()
        self.tok, self.rnn, self.head = nn.Embedding(vocab, d), cell(d, d, batch_first=True), nn.Linear(d, vocab)

    def forward(self, idx):
        return self.head(self.rnn(self.tok(idx))[0])


def char_gru(seed: int) -> Task:
    """Held-out task (added after the final choice of defaults, run once): a 1-layer GRU (d 48) on
    the generated corpus, batch 16, context 32, 300 steps."""
    return _char_task("char_gru", lambda vocab, ctx: _CharRNN(vocab, nn.GRU), seed)


# ---------------------------------------------------------------------------------------------
# Held out of round 3 (added after its choice of defaults, run once with them)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _moons():
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=3000, noise=0.25, random_state=11)
    flip = np.random.default_rng(11).random(len(y)) < 0.05  # 5 % flipped labels: no loss near 0
    return _standardised_split(X, np.where(flip, 1 - y, y), 2000)


class _ResMLP(nn.Module):
    """Pre-norm residual MLP: a different architecture family (LayerNorm, GELU, skip connections)."""

    def __init__(self, d_in=2, width=32, blocks=4, classes=2):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width),
                                                  nn.GELU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, classes))

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def moons_resmlp(seed: int) -> Task:
    """Held-out task of round 3: two moons (noise 0.25, 5 % flipped labels, 2000 train / 1000
    test), a 4-block pre-norm residual MLP (width 32, GELU), batch 64, 6 epochs (186 steps)."""
    return _moons_task("moons_resmlp", seed, epochs=6)


def _moons_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    return _array_task(name, _ResMLP(), _moons(), seed, batch=64, epochs=epochs)


@functools.lru_cache(maxsize=1)
def _eight_classes():
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=4000, n_features=30, n_informative=15, n_redundant=5,
                               n_classes=8, n_clusters_per_class=1, flip_y=0.05, random_state=21)
    return _standardised_split(X, y, 3000)


def _in_eval_mode(fn):
    """Evaluate with BatchNorm's running statistics and without dropout, then back to training."""
    def wrapped(model, X, y):
        model.eval()
        try:
            return fn(model, X, y)
        finally:
            model.train()
    return wrapped


def _bn_dropout_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(30, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(128, 8))
    return _array_task(name, model, _eight_classes(), seed, batch=64, epochs=epochs,
                       full_loss=_in_eval_mode(_eval_ce), metric=("test_acc", _in_eval_mode(_acc)))


def bn_dropout_mlp(seed: int) -> Task:
    """Held out of round 3 (added after moons_resmlp, run once), a selection task of round 4:
    8-class make_classification (30 features, 5 % flipped labels, 3000 train / 1000 test),
    30-128-128-8 MLP with BatchNorm and dropout 0.1 (the probe forward must replay the dropout mask
    and freeze the running statistics), batch 64, 8 epochs (368 steps). Train loss and test accuracy
    in eval mode."""
    return _bn_dropout_task("bn_dropout_mlp", seed, epochs=8)


# ---------------------------------------------------------------------------------------------
# Held out of round 4 (added after its choice of defaults, run once with them)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _noisy_waves():
    """4 classes of length-64 signals: a sinusoid of 3, 5, 7 or 9 cycles with random phase and
    amplitude 0.5–1.5, plus white noise σ = 1.2 (heavy enough that no model separates them all)."""
    rng = np.random.default_rng(31)
    n, length = 3000, 64
    y = rng.integers(0, 4, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1))
    X = amp * np.sin(2 * np.pi * (3 + 2 * y)[:, None] * t + phase) + rng.normal(0, 1.2, (n, length))
    X = torch.tensor(X[:, None, :], dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return X[:2000], y[:2000], X[2000:], y[2000:]


def _waves_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                          nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                          nn.Flatten(), nn.Linear(16, 4))
    return _array_task(name, model, _noisy_waves(), seed, batch=32, epochs=epochs)


def waves_cnn1d(seed: int) -> Task:
    """Held-out task of round 4: noisy sinusoid classes (2000 train / 1000 test), a 1-D CNN
    (conv 1→8 k5, max-pool 2, conv 8→16 k5, global average pool, linear 16→4), batch 32, 6 epochs
    (372 steps). Test metric: accuracy."""
    return _waves_task("waves_cnn1d", seed, epochs=6)


@functools.lru_cache(maxsize=1)
def _standardised_digits():
    """The digits split of ``_digits``, each pixel standardised with the training part's statistics
    (pixels constant there stay 0)."""
    Xtr, _, Xte, _ = _digits()
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return (Xtr - mu) / sd, (Xte - mu) / sd


def digits_autoencoder(seed: int) -> Task:
    """Second held-out task of round 4 (added in a later session, defaults unchanged, run once):
    reconstruct standardised digits through a 64-32-8-32-64 ReLU autoencoder (linear 8-d bottleneck;
    PCA with 8 components leaves ≈ 0.45 of the variance), MSE, batch 32, 6 epochs (222 steps). Test
    metric: test MSE."""
    return _autoencoder_task("digits_autoencoder", seed, epochs=6)


def _autoencoder_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 32), nn.ReLU(),
                          nn.Linear(32, 64))
    Xtr, Xte = _standardised_digits()
    return _array_task(name, model, (Xtr, Xtr, Xte, Xte), seed, batch=32, epochs=epochs,
                       loss=_mse, full_loss=_eval_mse, metric=("test_mse", _eval_mse))


@functools.lru_cache(maxsize=1)
def _tabular_clicks():
    """A click-through-like table, generated from one fixed seed: 6 categorical fields (12–40 levels;
    each level a random effect, two fields also interact) and 4 numeric features; the label is a
    Bernoulli draw from the logistic of their sum, so the Bayes loss is far above 0."""
    rng = np.random.default_rng(77)
    levels = (12, 20, 40, 16, 30, 25)
    n = 5000
    cats = np.stack([rng.integers(0, k, n) for k in levels], 1)
    num = rng.normal(size=(n, 4))
    logit = sum(rng.normal(0, 0.8, k)[cats[:, i]] for i, k in enumerate(levels))
    logit += rng.normal(0, 1.0, (levels[0], levels[1]))[cats[:, 0], cats[:, 1]]
    logit += num @ rng.normal(0, 0.7, 4) + 0.5 * np.sin(2 * num[:, 0]) * num[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    X = torch.tensor(np.concatenate([cats, num], 1), dtype=torch.float32)
    y = torch.tensor(y)
    return X[:4000], y[:4000], X[4000:], y[4000:], levels


class _EmbedMLP(nn.Module):
    """One 8-d embedding per categorical field, concatenated with the numeric features, into an MLP."""

    def __init__(self, levels, n_num=4, dim=8, hidden=32):
        super().__init__()
        self.n_cat = len(levels)
        self.emb = nn.ModuleList(nn.Embedding(k, dim) for k in levels)
        self.mlp = nn.Sequential(nn.Linear(dim * len(levels) + n_num, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        idx = x[:, :self.n_cat].long()
        z = torch.cat([e(idx[:, i]) for i, e in enumerate(self.emb)] + [x[:, self.n_cat:]], 1)
        return self.mlp(z).squeeze(-1)


def _bce(model, x, y):
    return F.binary_cross_entropy_with_logits(model(x), y)


@torch.no_grad()
def _eval_bce(model, X, y):
    return float(F.binary_cross_entropy_with_logits(model(X).double(), y.double()))


@torch.no_grad()
def _bin_acc(model, X, y):
    return float(((model(X) > 0).float() == y).float().mean())


def _tabular_task(name: str, seed: int, epochs: int) -> Task:
    Xtr, ytr, Xte, yte, levels = _tabular_clicks()
    torch.manual_seed(seed)
    model = _EmbedMLP(levels)
    return _array_task(name, model, (Xtr, ytr, Xte, yte), seed, batch=64, epochs=epochs,
                       loss=_bce, full_loss=_eval_bce, metric=("test_acc", _bin_acc))


def tabular_embed(seed: int) -> Task:
    """Held-out task of round 5 (added after the round-5 defaults were fixed, run once): click-like
    tabular data, categorical embeddings (the only task with them), binary cross-entropy, batch 64,
    4 epochs (248 steps). Test metric: accuracy."""
    return _tabular_task("tabular_embed", seed, epochs=4)


# ---------------------------------------------------------------------------------------------
# Held out of round 6 (fixed from plain runs before the round-6 choice; QLAB run once, after it)
# ---------------------------------------------------------------------------------------------
class _TinyViT(nn.Module):
    """A vision transformer on 8×8 images: 2×2 patches (16 tokens), a learned position embedding,
    one pre-norm block (2-head attention, GELU MLP), mean-pooled tokens into a linear head."""

    def __init__(self, dim=24, heads=2, hidden=48, classes=10):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(16, dim))
        self.ln1, self.ln2, self.ln_out = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        patches = x.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)
        z = self.embed(patches) + self.pos
        h = self.ln1(z)
        z = z + self.attn(h, h, h, need_weights=False)[0]
        z = z + self.mlp(self.ln2(z))
        return self.head(self.ln_out(z).mean(1))


def digits_vit(seed: int) -> Task:
    """Held-out task of round 6 (its QLAB runs made once, after the round-6 choice): a tiny
    vision transformer (the only attention model that classifies, the only one with LayerNorm
    before a pooled head) on the standardised digits, batch 32, 8 epochs (296 steps)."""
    return _vit_task("digits_vit", seed, epochs=8)


def _vit_task(name: str, seed: int, epochs: int) -> Task:
    Xtr, Xte = _standardised_digits()
    _, ytr, _, yte = _digits()
    torch.manual_seed(seed)
    return _array_task(name, _TinyViT(), (Xtr, ytr, Xte, yte), seed, batch=32, epochs=epochs)


# ---------------------------------------------------------------------------------------------
# Held out after round 6 (the defaults unchanged since round 5; QLAB run once)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _counts():
    """Count data from one fixed seed: 8 standard-normal features, a log rate that is linear plus
    two interactions and a bump, Poisson draws (mean count 2.7, 17 % zeros, so the Bayes deviance
    is far above 0)."""
    rng = np.random.default_rng(91)
    n = 4000
    X = rng.normal(size=(n, 8))
    log_rate = (0.5 + X @ rng.normal(0, 0.2, 8) + 0.3 * X[:, 0] * X[:, 1] - 0.2 * X[:, 2] * X[:, 3]
                + 0.4 * np.exp(-X[:, 4] ** 2))
    y = rng.poisson(np.exp(log_rate)).astype(np.float32)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y)
    return X[:3000], y[:3000], X[3000:], y[3000:]


def _poisson_deviance(eta, y):
    """Mean Poisson deviance 2·(y·log(y/λ) − (y − λ)) with λ = exp(η); ≥ 0, 0 only at λ = y."""
    ylogy = torch.where(y > 0, y * torch.log(torch.clamp_min(y, 1e-12)), torch.zeros_like(y))
    return 2 * (ylogy - y * eta - y + torch.exp(eta)).mean()


def _deviance(model, x, y):
    return _poisson_deviance(model(x).squeeze(-1), y)


@torch.no_grad()
def _eval_deviance(model, X, y):
    return float(_poisson_deviance(model(X).double().squeeze(-1), y.double()))


def _poisson_task(name: str, seed: int, epochs: int) -> Task:
    data = _counts()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))
    with torch.no_grad():  # the usual start of a log-link model: the output bias at log(mean count)
        model[-1].bias.fill_(math.log(float(data[1].mean())))
    return _array_task(name, model, data, seed, batch=64, epochs=epochs, loss=_deviance,
                       full_loss=_eval_deviance, metric=("test_deviance", _eval_deviance))


def counts_poisson(seed: int) -> Task:
    """Held-out task after round 6 (added and run once with the unchanged defaults): Poisson
    regression through a log link (the only task whose loss grows exponentially along a direction),
    an 8-32-32-1 SiLU MLP, mean Poisson deviance, batch 64, 6 epochs (276 steps). Test metric: test
    deviance."""
    return _poisson_task("counts_poisson", seed, epochs=6)


# ---------------------------------------------------------------------------------------------
# Held out of round 7 (fixed from plain runs before any QLAB run on it; QLAB run once, after the
# round-7 choice); a selection task from round 8 on
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _ratings():
    """Ratings from one fixed seed: 300 users × 200 items, a rank-4 taste model plus user and item
    biases, Gaussian noise (σ = 0.8, so the Bayes loss is ~0.64), 20000 observed pairs (each user
    and item seen ~67 and ~100 times), 17000 of them for training."""
    rng = np.random.default_rng(2027)
    n_users, n_items, n = 300, 200, 20000
    U, W = rng.normal(0, 0.6, (n_users, 4)), rng.normal(0, 0.6, (n_items, 4))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    r = 3.0 + bu[u] + bi[i] + (U[u] * W[i]).sum(1) + rng.normal(0, 0.8, n)
    X = torch.tensor(np.stack([u, i], 1), dtype=torch.long)
    y = torch.tensor(r, dtype=torch.float32)
    return X[:17000], y[:17000], X[17000:], y[17000:], n_users, n_items


class _Factorisation(nn.Module):
    """Rating ≈ μ + b_u + b_i + ⟨e_u, e_i⟩, 8-d embeddings (a bilinear, scale-symmetric model)."""

    def __init__(self, n_users, n_items, dim=8, mean=3.0):
        super().__init__()
        self.users, self.items = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        for e in (self.users, self.items):
            nn.init.normal_(e.weight, 0, 0.3)
        self.bu, self.bi = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)
        self.mean = nn.Parameter(torch.tensor(mean))

    def forward(self, x):
        u, i = x[:, 0], x[:, 1]
        dot = (self.users(u) * self.items(i)).sum(-1)
        return self.mean + self.bu(u).squeeze(-1) + self.bi(i).squeeze(-1) + dot


def _ratings_task(name: str, seed: int, epochs: int) -> Task:
    Xtr, ytr, Xte, yte, n_users, n_items = _ratings()
    torch.manual_seed(seed)
    model = _Factorisation(n_users, n_items, mean=float(ytr.mean()))
    return _array_task(name, model, (Xtr, ytr, Xte, yte), seed, batch=128, epochs=epochs,
                       loss=_mse, full_loss=_eval_mse, metric=("test_mse", _eval_mse))


def ratings_mf(seed: int) -> Task:
    """Held-out task of round 7 (budget fixed from plain runs before any QLAB run on it; a
    selection task from round 8 on): matrix factorisation of noisy ratings (the only task whose
    prediction is a product of two learned embeddings; every weight but the global mean is an
    embedding row), MSE, batch 128, 3 epochs (396 steps). Test metric: test MSE."""
    return _ratings_task("ratings_mf", seed, epochs=3)


# ---------------------------------------------------------------------------------------------
# Held out of round 8 (data, model and budget fixed from plain runs at seed 0 before any QLAB run
# on it: at feature scale 1 plain heavy ball was best at lr 1, the edge of the grid; at 3, 0.1)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _community_graph():
    """A stochastic block graph from one fixed seed: 800 nodes in 5 communities, edge probability
    0.03 inside a community and 0.006 across (~8.7 edges per node, 46 % of them across), 12-d node
    features (standard deviation ~3, not standardised) whose class means are weak (logistic
    regression on a node's own features classifies 66 % of the test nodes, on its features averaged
    over two hops 77 %), and 12 % of the labels redrawn at random (so the train loss stays far
    above 0). Returns the symmetric-normalised adjacency with self-loops, the features, the labels,
    and a 560/240 split."""
    rng = np.random.default_rng(808)
    n, k = 800, 5
    c = rng.integers(0, k, n)
    p = np.where(c[:, None] == c[None, :], 0.03, 0.006)
    A = np.triu(rng.random((n, n)) < p, 1)
    A = (A | A.T).astype(np.float64) + np.eye(n)
    d = A.sum(1) ** -0.5
    A_hat = d[:, None] * A * d[None, :]
    means = rng.normal(0, 0.45, (k, 12))
    X = 3.0 * (means[c] + rng.normal(0, 1.0, (n, 12)))  # scale 1: heavy ball best at the grid's edge
    y = np.where(rng.random(n) < 0.12, rng.integers(0, k, n), c)
    perm = rng.permutation(n)
    tr, te = perm[:560], perm[560:]
    return (torch.tensor(A_hat, dtype=torch.float32), torch.tensor(X, dtype=torch.float32),
            torch.tensor(y, dtype=torch.long), torch.tensor(tr), torch.tensor(te))


class _GCN(nn.Module):
    """Two graph convolutions, H ← Â·H·W (Kipf & Welling), 12 → 32 → 5, ReLU between them; the
    whole graph goes through every forward, the loss reads the batch's nodes."""

    def __init__(self, A_hat, X, hidden=32, classes=5):
        super().__init__()
        self.register_buffer("A_hat", A_hat)
        self.register_buffer("X", X)
        self.l1, self.l2 = nn.Linear(X.shape[1], hidden), nn.Linear(hidden, classes)

    def forward(self, idx):
        h = F.relu(self.A_hat @ self.l1(self.X))
        return (self.A_hat @ self.l2(h))[idx]


def graph_gcn(seed: int) -> Task:
    """Held-out task of round 8 (budget fixed from plain runs before any QLAB run on it): node
    classification on a community graph with a two-layer GCN (the only task whose every forward
    mixes the examples through a fixed graph), cross-entropy on a batch of 40 training nodes, 30
    epochs (420 steps). Test metric: accuracy on the held-out nodes."""
    return _graph_task("graph_gcn", seed, epochs=30)


def _graph_task(name: str, seed: int, epochs: int) -> Task:
    A_hat, X, y, tr, te = _community_graph()
    torch.manual_seed(seed)
    model = _GCN(A_hat, X)
    return _array_task(name, model, (tr, y[tr], te, y[te]), seed, batch=40, epochs=epochs)


# ---------------------------------------------------------------------------------------------
# Held out of round 9: three selection tasks with three times their budget (the same data, model,
# seeds and batch order, the run continued), to see whether the picture holds over longer runs.
# Fixed before any run with the longer budgets; the defaults were chosen at the shorter ones.
# Selection tasks from round 10.
# ---------------------------------------------------------------------------------------------
def char_transformer_3x(seed: int) -> Task:
    """char_transformer with 900 steps instead of 300."""
    return _char_task("char_transformer_3x", lambda vocab, ctx: _CharLM(vocab, ctx=ctx), seed,
                      steps=900)


def friedman_mlp_3x(seed: int) -> Task:
    """friedman_mlp with 60 epochs (1860 steps) instead of 20."""
    return _friedman_task("friedman_mlp_3x", seed, epochs=60)


def waves_cnn1d_3x(seed: int) -> Task:
    """waves_cnn1d with 18 epochs (1116 steps) instead of 6."""
    return _waves_task("waves_cnn1d_3x", seed, epochs=18)


# ---------------------------------------------------------------------------------------------
# Held out of round 10: three more selection tasks with three times their budget (the round-9
# ones joined the selection in round 10). Fixed before any run at these budgets. Selection tasks
# from round 11.
# ---------------------------------------------------------------------------------------------
def digits_cnn_3x(seed: int) -> Task:
    """digits_cnn with 9 epochs (333 steps) instead of 3."""
    return _digits_cnn_task("digits_cnn_3x", seed, epochs=9)


def tabular_embed_3x(seed: int) -> Task:
    """tabular_embed with 12 epochs (744 steps) instead of 4."""
    return _tabular_task("tabular_embed_3x", seed, epochs=12)


def counts_poisson_3x(seed: int) -> Task:
    """counts_poisson with 18 epochs (828 steps) instead of 6."""
    return _poisson_task("counts_poisson_3x", seed, epochs=18)


# ---------------------------------------------------------------------------------------------
# Held out of round 11: three more selection tasks with three times their budget (round 10's
# held-out tasks joined the selection in round 11). Fixed before any run at these budgets.
# ---------------------------------------------------------------------------------------------
def synth_mlp_3x(seed: int) -> Task:
    """synth_mlp with 24 epochs (1104 steps) instead of 8."""
    return _synth_task("synth_mlp_3x", seed, epochs=24)


def bn_dropout_mlp_3x(seed: int) -> Task:
    """bn_dropout_mlp with 24 epochs (1104 steps) instead of 8."""
    return _bn_dropout_task("bn_dropout_mlp_3x", seed, epochs=24)


def ratings_mf_3x(seed: int) -> Task:
    """ratings_mf with 9 epochs (1188 steps) instead of 3."""
    return _ratings_task("ratings_mf_3x", seed, epochs=9)


# ---------------------------------------------------------------------------------------------
# Held out of round 12: three tasks outside every choice so far, at three times their budget
# (round 11's held-out tasks joined the selection in round 12, less the one below the loss
# floor). Fixed before any run at these budgets.
# ---------------------------------------------------------------------------------------------
def digits_vit_3x(seed: int) -> Task:
    """digits_vit with 24 epochs (888 steps) instead of 8."""
    return _vit_task("digits_vit_3x", seed, epochs=24)


def digits_autoencoder_3x(seed: int) -> Task:
    """digits_autoencoder with 18 epochs (666 steps) instead of 6."""
    return _autoencoder_task("digits_autoencoder_3x", seed, epochs=18)


def moons_resmlp_3x(seed: int) -> Task:
    """moons_resmlp with 18 epochs (558 steps) instead of 6."""
    return _moons_task("moons_resmlp_3x", seed, epochs=18)


# ---------------------------------------------------------------------------------------------
# Held out of round 13: the two tasks left outside every choice that have no 3× version yet, at
# three times their budget (round 12's held-out tasks join the selection). Fixed before any run at
# these budgets.
# ---------------------------------------------------------------------------------------------
def char_gru_3x(seed: int) -> Task:
    """char_gru with 900 steps instead of 300."""
    return _char_task("char_gru_3x", lambda vocab, ctx: _CharRNN(vocab, nn.GRU), seed, steps=900)


def graph_gcn_3x(seed: int) -> Task:
    """graph_gcn with 90 epochs (1260 steps) instead of 30."""
    return _graph_task("graph_gcn_3x", seed, epochs=90)


# ---------------------------------------------------------------------------------------------
# Held out of round 14 (selection tasks since round 15): a loss that is not smooth and a recurrent
# cell not in the selection. Fixed from plain SGD/Adam runs (loss above the floor, budget where those
# still improve) before any QLAB run on them.
# ---------------------------------------------------------------------------------------------
TAU = 0.9  # friedman_quantile: the quantile the model predicts


def _pinball(model, x, y):
    r = y - model(x)
    return torch.maximum(TAU * r, (TAU - 1) * r).mean()


@torch.no_grad()
def _eval_pinball(model, X, y):
    r = y.double() - model(X).double()
    return float(torch.maximum(TAU * r, (TAU - 1) * r).mean())


def _quantile_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 1))
    return _array_task(name, model, _friedman(), seed, batch=32, epochs=epochs,
                       loss=_pinball, full_loss=_eval_pinball, metric=("test_pinball", _eval_pinball))


def friedman_quantile(seed: int) -> Task:
    """friedman_mlp's data and network fitted to the 0.9 quantile (pinball loss: piecewise linear in
    the prediction, so the parabola along a direction is a fit to kinks), batch 32, 20 epochs (620
    steps). Test metric: test pinball loss."""
    return _quantile_task("friedman_quantile", seed, epochs=20)


class _RowLSTM(nn.Module):
    """An 8×8 digit read row by row (8 steps of 8 pixels) by an LSTM; the last state classifies."""

    def __init__(self, d=32):
        super().__init__()
        self.rnn, self.head = nn.LSTM(8, d, batch_first=True), nn.Linear(d, 10)

    def forward(self, x):
        return self.head(self.rnn(x.reshape(-1, 8, 8))[0][:, -1])


def _lstm_task(name: str, seed: int, epochs: int) -> Task:
    torch.manual_seed(seed)
    return _digits_task(name, _RowLSTM(), seed, batch=32, epochs=epochs)


def digits_lstm(seed: int) -> Task:
    """sklearn digits read row by row by a 1-layer LSTM (d 32), batch 32, 6 epochs (222 steps)."""
    return _lstm_task("digits_lstm", seed, epochs=6)


# ---------------------------------------------------------------------------------------------
# Held out of round 15 (selection tasks from round 16): round 14's held-out tasks at longer budgets.
# Fixed from plain runs at seed 0 before any QLAB run at these budgets: at 3× the LSTM's plain SGD
# reached 0.013 (lr 1), too near the loss floor, so it gets twice its budget.
# ---------------------------------------------------------------------------------------------
def friedman_quantile_3x(seed: int) -> Task:
    """friedman_quantile with 60 epochs (1860 steps) instead of 20."""
    return _quantile_task("friedman_quantile_3x", seed, epochs=60)


def digits_lstm_2x(seed: int) -> Task:
    """digits_lstm with 12 epochs (444 steps) instead of 6."""
    return _lstm_task("digits_lstm_2x", seed, epochs=12)


# ---------------------------------------------------------------------------------------------
# Held out of round 16 (selection tasks from round 17): two new kinds of task (a robust loss on
# heavy-tailed targets; several sigmoid outputs with noisy labels), their budgets fixed from plain
# runs at seed 0 before any QLAB run on them (the best plain lr's final loss above FLOOR, and still
# falling at the end): at seed 0 the Huber task's best plain runs end at 0.19–0.21 (0.18–0.19
# with twice the budget), the multi-label task's at 0.36–0.41 (label noise alone costs 0.325; at
# half the budget 0.39–0.65).
# ---------------------------------------------------------------------------------------------
HUBER_DELTA = 1.0  # friedman3_huber: quadratic within one (standardised) unit of the target


@functools.lru_cache(maxsize=1)
def _friedman3_heavy():
    """Friedman #3 (4 features, atan of a ratio), targets standardised and given Student-t noise
    with 2 degrees of freedom (infinite variance: a few targets lie far off), one fixed seed."""
    from sklearn.datasets import make_friedman3
    X, y = make_friedman3(n_samples=2000, noise=0.0, random_state=11)
    y = (y - y[:1500].mean()) / y[:1500].std()
    y = y + 0.3 * np.random.default_rng(11).standard_t(2, size=len(y))
    X = (X - X[:1500].mean(0)) / X[:1500].std(0)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)[:, None]
    return X[:1500], y[:1500], X[1500:], y[1500:]


def _huber(model, x, y):
    return F.huber_loss(model(x), y, delta=HUBER_DELTA)


@torch.no_grad()
def _eval_huber(model, X, y):
    return float(F.huber_loss(model(X).double(), y.double(), delta=HUBER_DELTA))


def _huber_task(seed: int, epochs: int) -> Task:
    X = _friedman3_heavy()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    return _array_task("friedman3_huber", model, X, seed, batch=32, epochs=epochs, loss=_huber,
                       full_loss=_eval_huber, metric=("test_huber", _eval_huber))


def friedman3_huber(seed: int) -> Task:
    """Huber loss (δ 1) on Friedman #3 with heavy-tailed (t, 2 dof) target noise, 4-64-64-1 ReLU
    MLP, batch 32, 8 epochs (368 steps). Test metric: test Huber loss."""
    return _huber_task(seed, epochs=8)


@functools.lru_cache(maxsize=1)
def _digits_attributes():
    """The digits split of ``_digits`` with four yes/no attributes of each digit for labels (even,
    five or more, prime, has a closed loop), each label flipped with probability 0.1 (one fixed seed):
    four sigmoid outputs, none of them separable."""
    Xtr, ytr, Xte, yte = _digits()
    table = torch.tensor([[d % 2 == 0, d >= 5, d in (2, 3, 5, 7), d in (0, 6, 8, 9)]
                          for d in range(10)], dtype=torch.float32)
    g = torch.Generator().manual_seed(4321)
    flip = lambda y: (y - (torch.rand(y.shape, generator=g) < 0.1).float()).abs()  # noqa: E731
    return Xtr, flip(table[ytr]), Xte, flip(table[yte])


def _multilabel_task(seed: int, epochs: int) -> Task:
    data = _digits_attributes()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return _array_task("digits_multilabel", model, data, seed, batch=32, epochs=epochs, loss=_bce,
                       full_loss=_eval_bce, metric=("test_acc", _bin_acc))


def digits_multilabel(seed: int) -> Task:
    """Four binary attributes of each digit (10 % of labels flipped), 64-64-4 ReLU MLP, binary
    cross-entropy averaged over the labels, batch 32, 6 epochs (222 steps). Test metric: label
    accuracy."""
    return _multilabel_task(seed, epochs=6)


# ---------------------------------------------------------------------------------------------
# Held out of round 17: two kinds of task where the defaults have failed before (a recurrent net
# trained short of convergence; sparse embedding rows, most of them untouched by a batch), fixed
# from plain runs at seed 0 before any QLAB run on them (the best plain lr's final loss above
# FLOOR, and still falling at the end). char_lstm at char_gru's 300 steps: best plain SGD 1.64 (lr 1,
# the grid's edge), heavy ball 0.88 (lr 1, the edge), Adam 0.99 (lr 0.01). topics_bag at 2 epochs
# (624 steps): SGD 0.90 (lr 1, the edge), heavy ball 0.79 (lr 1), Adam 0.50 (lr 0.1; the label noise
# alone costs ~0.64, so Adam has begun to memorise; at 1 epoch 0.97 / 0.83 / 0.62). A first version
# with 5000 documents at batch 32 for 4 epochs was memorised by Adam at lr 0.1 (0.014): hence 20000
# documents and two passes.
# ---------------------------------------------------------------------------------------------
def char_lstm(seed: int) -> Task:
    """A 1-layer LSTM (d 48) on the generated corpus, batch 16, context 32, 300 steps (char_gru with
    an LSTM cell). Test metric: bits per character."""
    return _char_task("char_lstm", lambda vocab, ctx: _CharRNN(vocab, nn.LSTM), seed)


def _zipf_topics(rng, words: int, topics: int, power: float, n: int):
    """Zipf frequencies 1/r^power over ``words`` ranks, each topic's own random ranking of the
    vocabulary and a last, common one (in that order from ``rng``), and ``n`` topics drawn."""
    zipf = 1.0 / np.arange(1, words + 1) ** power
    zipf /= zipf.sum()
    ranks = [rng.permutation(words) for _ in range(topics + 1)]
    return zipf, ranks, rng.integers(0, topics, n)


@functools.lru_cache(maxsize=1)
def _topic_documents():
    """Bags of tokens from one fixed seed: 3000 token types with Zipf frequencies, 8 topics; each
    document (24 tokens) draws half its tokens from its topic's own Zipf ranking of the vocabulary
    and half from the common one, and 15 % of the labels are replaced by a random topic. 24000
    documents, 20000 for training: a batch of 64 touches about a quarter of the 3000 embedding rows."""
    rng = np.random.default_rng(2029)
    n_tokens, n_topics, length, n = 3000, 8, 24, 24000
    zipf, ranks, topic = _zipf_topics(rng, n_tokens, n_topics, 1.1, n)
    docs = np.empty((n, length), dtype=np.int64)
    for k in range(n):
        own = rng.random(length) < 0.5
        docs[k] = np.where(own, ranks[topic[k]][rng.choice(n_tokens, length, p=zipf)],
                           ranks[-1][rng.choice(n_tokens, length, p=zipf)])
    labels = np.where(rng.random(n) < 0.15, rng.integers(0, n_topics, n), topic)
    X, y = torch.tensor(docs), torch.tensor(labels)
    return X[:20000], y[:20000], X[20000:], y[20000:]


class _BagOfEmbeddings(nn.Module):
    """The mean of a document's token embeddings (16-d), then a linear classifier."""

    def __init__(self, n_tokens=3000, dim=16, n_topics=8):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(n_tokens, dim, mode="mean"), nn.Linear(dim, n_topics)

    def forward(self, x):
        return self.head(self.bag(x))


def _topics_task(seed: int, epochs: int) -> Task:
    data = _topic_documents()
    torch.manual_seed(seed)
    return _array_task("topics_bag", _BagOfEmbeddings(), data, seed, batch=64, epochs=epochs)


def topics_bag(seed: int) -> Task:
    """Topic of a bag of 24 Zipf-distributed tokens (3000 types, 8 topics, 15 % of the labels
    random), mean of 16-d embeddings then a linear layer, cross-entropy, batch 64, 2 epochs (624
    steps). Test metric: test accuracy."""
    return _topics_task(seed, epochs=2)


# ---------------------------------------------------------------------------------------------
# Held out of round 18: char_lstm (round 17's held-out recurrent net, a selection task from round
# 18) at three times its budget, where the fitted step of some rules falls late in a run (log items
# 31, 33). Fixed before any run on it. Not topics_bag at 3×: Adam at 2 epochs already ends below
# the loss its label noise alone costs (0.50 against ~0.64), and six passes would memorise it.
# ---------------------------------------------------------------------------------------------
def char_lstm_3x(seed: int) -> Task:
    """char_lstm with 900 steps instead of 300."""
    return _char_task("char_lstm_3x", lambda vocab, ctx: _CharRNN(vocab, nn.LSTM), seed, steps=900)


# ---------------------------------------------------------------------------------------------
# Held out of round 19: two kinds of network not in the selection (sine activations on a
# coordinate regression; a deep, narrow tanh net with neither skips nor normalisation), fixed from
# plain runs at seed 0 before any QLAB run on them (the best plain lr's final loss above FLOOR). At
# seed 0 sine_field's best plain runs end at 0.16 (SGD, lr 0.1, still falling), 0.115 (heavy ball,
# lr 0.1) and 0.113 (Adam, lr 0.01; 0.098 at three quarters): the target noise alone costs 0.09.
# digits_deep_tanh's at 1.72 (SGD, lr 0.1, still falling), 0.78 (heavy ball, lr 0.1; 0.62 at
# three quarters, lr 1 diverges) and 0.22 (Adam, lr 0.01, still falling).
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _noisy_field():
    """A smooth random field on [-1, 1]², one fixed seed: twelve sinusoids with random wave vectors
    (entries N(0, 3²)), phases and amplitudes, standardised, plus N(0, 0.3²) noise on each target;
    4000 training and 1000 test points."""
    rng = np.random.default_rng(2031)
    n = 5000
    X = rng.uniform(-1, 1, size=(n, 2))
    W, b = rng.normal(0, 3.0, size=(2, 12)), rng.uniform(0, 2 * np.pi, 12)
    f = np.sin(X @ W + b) @ rng.normal(0, 1, 12)
    f = (f - f[:4000].mean()) / f[:4000].std()
    y = f + 0.3 * rng.standard_normal(n)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
    return X[:4000], y[:4000], X[4000:], y[4000:]


class _Sine(nn.Module):
    """x ↦ sin(ω·x): a periodic activation, whose loss along a direction is not convex far out."""

    def __init__(self, omega: float):
        super().__init__()
        self.omega = omega

    def forward(self, x):
        return torch.sin(self.omega * x)


def sine_field(seed: int) -> Task:
    """MSE regression of a noisy smooth 2-D field (the noise costs 0.09) from its coordinates,
    2-64-64-1 with sine activations (ω 3 then 1), batch 64, 4 epochs (248 steps). Test metric:
    test MSE."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 64), _Sine(3.0), nn.Linear(64, 64), _Sine(1.0), nn.Linear(64, 1))
    return _array_task("sine_field", model, _noisy_field(), seed, batch=64, epochs=4, loss=_mse,
                       full_loss=_eval_mse, metric=("test_mse", _eval_mse))


def digits_deep_tanh(seed: int) -> Task:
    """sklearn digits, a 64-32-…-32-10 tanh MLP with six hidden layers (no skips, no
    normalisation), batch 32, 6 epochs (222 steps)."""
    torch.manual_seed(seed)
    layers = [nn.Linear(64, 32), nn.Tanh()]
    for _ in range(5):
        layers += [nn.Linear(32, 32), nn.Tanh()]
    return _digits_task("digits_deep_tanh", nn.Sequential(*layers, nn.Linear(32, 10)), seed, batch=32,
                        epochs=6)


# ---------------------------------------------------------------------------------------------
# Held out of round 20: two more kinds of network not in the selection (a mixture of experts,
# whose softmax gate multiplies the experts' outputs; a deep linear network, a product of four
# matrices through a rank-8 bottleneck), fixed from plain runs at seed 0 before any QLAB run on them.
# At seed 0 digits_moe's best plain runs end at 0.136 (SGD, lr 1, still falling), 0.072 (heavy
# ball, lr 0.1) and 0.086 (Adam, lr 0.01). deep_linear's, first tried at 4 epochs where the best of
# every base ended within 15 % of the rank-8 optimum (0.17–0.18 against 0.157), at 2 epochs:
# 0.205 (SGD, lr 1, the grid's largest), 0.201 (heavy ball, lr 0.1; lr 1 diverges) and 0.189
# (Adam, lr 0.01).
# ---------------------------------------------------------------------------------------------
class _MixtureOfExperts(nn.Module):
    """A softmax gate over ``k`` small ReLU experts; the output is the gate-weighted sum of the
    experts' logits, so every expert's gradient is scaled by its gate and the gate's by the experts."""

    def __init__(self, d_in: int, d_out: int, k: int = 4, hidden: int = 16):
        super().__init__()
        self.gate = nn.Linear(d_in, k)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(),
                                                   nn.Linear(hidden, d_out)) for _ in range(k))

    def forward(self, x):
        weights = torch.softmax(self.gate(x), dim=-1)                  # (n, k)
        outs = torch.stack([e(x) for e in self.experts], dim=-1)       # (n, d_out, k)
        return (outs * weights[:, None, :]).sum(-1)


def digits_moe(seed: int) -> Task:
    """sklearn digits, a softmax gate over four 64-16-10 ReLU experts, batch 32, 6 epochs (222
    steps)."""
    torch.manual_seed(seed)
    return _digits_task("digits_moe", _MixtureOfExperts(64, 10), seed, batch=32, epochs=6)


@functools.lru_cache(maxsize=1)
def _linear_map_data():
    """Inputs x ∈ R³² with a spectrum decaying from 1 to 0.5 (in a random basis) and targets
    y = A·x + N(0, 0.3²) with A: R³² → R¹⁶ of singular values 3·0.85^k (k = 0…15), one fixed seed;
    2000 training and 1000 test rows. The best linear map fits the training set to 0.088, the best
    of rank 8 to 0.157."""
    rng = np.random.default_rng(2032)
    n, d, m = 3000, 32, 16
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    X = rng.standard_normal((n, d)) * np.geomspace(1.0, 0.5, d) @ Q.T
    U = np.linalg.qr(rng.standard_normal((m, m)))[0]
    V = np.linalg.qr(rng.standard_normal((d, m)))[0]
    A = U @ np.diag(3.0 * 0.85 ** np.arange(m)) @ V.T
    Y = X @ A.T + 0.3 * rng.standard_normal((n, m))
    X, Y = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    return X[:2000], Y[:2000], X[2000:], Y[2000:]


def deep_linear(seed: int) -> Task:
    """MSE regression of a noisy linear map R³² → R¹⁶ by a deep linear network 32-16-8-16-16 (four
    matrices, no activation, no bias: a non-convex factorisation of a convex problem, the rank-8
    bottleneck keeping the training loss above 0.157), batch 32, 2 epochs (124 steps). Test metric:
    test MSE."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 16, bias=False), nn.Linear(16, 8, bias=False),
                          nn.Linear(8, 16, bias=False), nn.Linear(16, 16, bias=False))
    return _array_task("deep_linear", model, _linear_map_data(), seed, batch=32, epochs=2,
                       loss=_mse, full_loss=_eval_mse, metric=("test_mse", _eval_mse))


# ---------------------------------------------------------------------------------------------
# Held out of round 20 (added mid-round, after the `_unseen` candidate was measured on the selection
# and before any QLAB run on it): a third kind of sparse-row model, to test that candidate's reading
# on a task it was not designed on. Fixed from plain runs at seed 0 before any QLAB run on it.
# First tried at 4 epochs over 6000 rows, where plain Adam at lr 0.01 drove the training loss to
# 0.12 at a test accuracy of 0.60 (memorised), then set to one epoch over 20000 rows: at seed 0
# the best plain runs end at 0.617 (SGD, lr 1, the grid's largest), 0.618 (heavy ball, lr 0.1)
# and 0.488 (Adam, lr 0.01).
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _click_fields():
    """Clicks from one fixed seed: six categorical fields of 100–400 levels (1400 in all, Zipf-like
    level frequencies), each level a random effect, and rank-3 pairwise interactions between the
    fields' levels; the label a Bernoulli draw from the logistic of their sum. 20000 training and
    4000 test rows; the fields' offsets into one table of 1400 rows are part of the data."""
    rng = np.random.default_rng(2033)
    levels = (300, 200, 150, 100, 400, 250)
    n = 24000
    offsets = np.cumsum((0,) + levels[:-1])
    cols = []
    for k in levels:
        p = 1.0 / np.arange(1, k + 1) ** 0.8
        cols.append(rng.choice(k, size=n, p=p / p.sum()))
    idx = np.stack(cols, 1) + offsets
    w = rng.normal(0, 0.5, sum(levels))
    v = rng.normal(0, 0.45, (sum(levels), 3))
    s = v[idx].sum(1)
    logit = w[idx].sum(1) + 0.5 * ((s * s).sum(1) - (v[idx] ** 2).sum((1, 2))) - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    X, y = torch.tensor(idx, dtype=torch.long), torch.tensor(y)
    return X[:20000], y[:20000], X[20000:], y[20000:]


class _FactorizationMachine(nn.Module):
    """Rendle's factorization machine over one table of field levels: a bias, a weight per level and
    a k-d vector per level whose pairwise dot products model the fields' interactions."""

    def __init__(self, rows: int, k: int = 8):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.weight = nn.Embedding(rows, 1)
        self.vectors = nn.Embedding(rows, k)
        nn.init.normal_(self.weight.weight, 0, 0.01)
        nn.init.normal_(self.vectors.weight, 0, 0.1)

    def forward(self, idx):
        v = self.vectors(idx)                                   # (n, fields, k)
        pairs = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)
        return self.bias + self.weight(idx).squeeze(-1).sum(1) + pairs


def clicks_fm(seed: int) -> Task:
    """A factorization machine (8-d vectors) on six categorical click fields of 100–400 levels,
    binary cross-entropy, batch 64, one epoch (312 steps: no row is seen twice): each batch touches
    at most 64 of a field's levels. Test metric: accuracy."""
    torch.manual_seed(seed)
    return _array_task("clicks_fm", _FactorizationMachine(1400), _click_fields(), seed, batch=64,
                       epochs=1, loss=_bce, full_loss=_eval_bce, metric=("test_acc", _bin_acc))

# ---------------------------------------------------------------------------------------------
# Held out of round 21: two more kinds of loss not in the selection (a contrastive loss whose
# negatives are the other rows of the batch, so every row's gradient depends on the whole batch;
# skip-gram word embeddings with sampled negatives, two sparse tables meeting in a dot product),
# fixed from plain runs at seed 0 before any QLAB run on them. At seed 0 digits_contrastive's best
# plain runs end at 2.22 (SGD, lr 0.1), 2.07 (heavy ball, lr 0.1) and 1.92 (Adam, lr 0.01), from
# log 64 = 4.16. skipgram_ns, first tried with the batch's mean loss, where plain SGD barely moved
# at the grid's largest lr (4.14 from 4.16; its best lr near 10), takes the batch's sum: 2.62 (SGD,
# lr 0.1; lr 1 diverges), 2.67 (heavy ball, lr 0.01) and 2.50 (Adam, lr 0.01), each lr's neighbours
# in the grid far worse (above 3.5 or diverged).
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digit_views():
    """Two fixed random views of every digit (one seed): each a shift by up to one pixel (zeros
    shifted in), 15 % of the pixels dropped and N(0, 0.1²) noise; rows (n, 2, 64), labels kept for
    nothing but inspection. The digits' own train/test split."""
    Xtr, ytr, Xte, yte = _digits()
    g = torch.Generator().manual_seed(2035)

    def view(X):
        img = X.view(-1, 8, 8)
        out = torch.zeros_like(img)
        for k in range(len(img)):
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            src = img[k, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
            out[k, max(0, dy):8 - max(0, -dy), max(0, dx):8 - max(0, -dx)] = src
        keep = (torch.rand(out.shape, generator=g) >= 0.15).float()
        return (out * keep + 0.1 * torch.randn(out.shape, generator=g)).view(-1, 64)

    def views(X):
        return torch.stack([view(X), view(X)], dim=1)

    return views(Xtr), ytr, views(Xte), yte


def _info_nce(model, x, y=None, temperature=0.2):
    """Symmetric InfoNCE: each row's first view must pick its own second view among the batch's
    (and back), by cosine similarity over ``temperature``."""
    z1 = F.normalize(model(x[:, 0]), dim=-1)
    z2 = F.normalize(model(x[:, 1]), dim=-1)
    logits = z1 @ z2.T / temperature
    target = torch.arange(len(x))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def _eval_info_nce(model, X, y, batch=64):
    """The training loss over the set in its stored order, in consecutive batches of the training
    batch size (the loss depends on which rows share a batch), the ragged end dropped."""
    losses = [float(_info_nce(model, X[i:i + batch]).double())
              for i in range(0, len(X) - batch + 1, batch)]
    return sum(losses) / len(losses)


@torch.no_grad()
def _retrieval_acc(model, X, y):
    """Share of test digits whose first view's nearest second view (cosine) is its own."""
    z1, z2 = F.normalize(model(X[:, 0]), dim=-1), F.normalize(model(X[:, 1]), dim=-1)
    return float(((z1 @ z2.T).argmax(-1) == torch.arange(len(X))).float().mean())


def digits_contrastive(seed: int) -> Task:
    """sklearn digits, a 64-64-32 ReLU encoder trained by symmetric InfoNCE (temperature 0.2) to
    match two fixed random views of each digit against the other rows of its batch, batch 64,
    12 epochs (216 steps). Test metric: top-1 retrieval accuracy of view 2 from view 1 on the test
    digits."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    return _array_task("digits_contrastive", model, _digit_views(), seed, batch=64, epochs=12,
                       loss=_info_nce, full_loss=_eval_info_nce, metric=("test_acc", _retrieval_acc))


@functools.lru_cache(maxsize=1)
def _skipgram_pairs():
    """(centre, context, five negatives) rows from one fixed seed: 800 words with Zipf frequencies,
    each mostly about one of 16 topics; a pair is two words of one topic's (Zipf-ranked) vocabulary
    three times in four, else two words of the common ranking; negatives drawn from the unigram
    distribution to the power 0.75 (word2vec's). 20000 training and 4000 test rows."""
    rng = np.random.default_rng(2034)
    words, topics, n, k = 800, 16, 24000, 5
    zipf, ranks, topic = _zipf_topics(rng, words, topics, 1.0, n)
    own = rng.random(n) < 0.75
    pair = np.empty((n, 2), dtype=np.int64)
    for j in range(n):
        order = ranks[topic[j]] if own[j] else ranks[-1]
        pair[j] = order[rng.choice(words, 2, p=zipf)]
    counts = np.bincount(pair.ravel(), minlength=words) + 1.0
    noise = counts ** 0.75 / (counts ** 0.75).sum()
    neg = rng.choice(words, (n, k), p=noise)
    X = torch.tensor(np.concatenate([pair, neg], 1))
    y = torch.zeros(n)
    return X[:20000], y[:20000], X[20000:], y[20000:]


class _SkipGram(nn.Module):
    """word2vec's skip-gram: a centre table and a context table (16-d); a row's scores are its
    centre vector's dot products with its context's and its negatives' context vectors."""

    def __init__(self, words: int = 800, dim: int = 16):
        super().__init__()
        self.centre, self.context = nn.Embedding(words, dim), nn.Embedding(words, dim)
        nn.init.normal_(self.centre.weight, 0, 0.1)
        nn.init.normal_(self.context.weight, 0, 0.1)

    def forward(self, x):
        return (self.centre(x[:, :1]) * self.context(x[:, 1:])).sum(-1)   # (n, 1 + negatives)


def _negative_sampling_rows(model, x):
    s = model(x)
    return -(F.logsigmoid(s[:, 0]) + F.logsigmoid(-s[:, 1:]).sum(1))


def _negative_sampling(model, x, y=None):
    """The batch's sum over rows, as word2vec's per-pair updates add up (a mean would put plain
    SGD's best lr near 10, outside the grid: each row gets 1/64 of a step)."""
    return _negative_sampling_rows(model, x).sum()


@torch.no_grad()
def _eval_negative_sampling(model, X, y):
    """The mean over rows (the batch loss over the batch size)."""
    return float(_negative_sampling_rows(model, X).double().mean())


@torch.no_grad()
def _ranking_acc(model, X, y):
    """Share of test rows whose context outscores all five of its negatives."""
    s = model(X)
    return float((s[:, 0] > s[:, 1:].max(1).values).float().mean())


def skipgram_ns(seed: int) -> Task:
    """Skip-gram embeddings (800 words, two 16-d tables) with five sampled negatives per pair,
    batch 64, one epoch (312 steps): a batch touches at most 448 of each table's rows. Test metric:
    the share of test pairs ranked above their negatives."""
    torch.manual_seed(seed)
    return _array_task("skipgram_ns", _SkipGram(), _skipgram_pairs(), seed, batch=64, epochs=1,
                       loss=_negative_sampling, full_loss=_eval_negative_sampling,
                       metric=("test_acc", _ranking_acc))


# ---------------------------------------------------------------------------------------------
# Held out of round 22: two more kinds of task not in the selection (a vanilla tanh RNN, whose
# recurrence has no gate, on the adding problem's long-range sum; a student net matching a fixed
# teacher's soft targets, a loss that compares two distributions), fixed from plain runs at seed 0
# before any QLAB run on them. adding_rnn was first tried at 30 steps, where every plain run of the
# grid stayed on the plateau of predicting the mean (0.18–0.20 against 0.19 for the mean) after 500
# steps, then set to 10 steps: at seed 0 the best plain runs end at 0.174 (SGD, lr 0.1; lr 1
# diverges), 0.118 (heavy ball, lr 0.1) and 0.043 (Adam, lr 0.01; its neighbours 0.16 and 0.22),
# against the noise's 0.0225. digits_distill was first tried with the soft cross-entropy, whose
# teacher entropy (1.0) is a constant the ratios would hide in (best runs 1.09–1.27), then set to the
# KL divergence: 0.269 (SGD, lr 1, the grid's largest), 0.088 (heavy ball, lr 0.1) and 0.104 (Adam,
# lr 0.01), from 1.31.
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _adding_sequences():
    """The adding problem from one fixed seed: 10 steps of (value ~ U(0, 1), marker), the marker 1
    at one step of the first half and one of the second; the target the sum of the two marked
    values plus N(0, 0.15²) (the noise costs 0.0225, above the loss floor). 8000 training and 2000
    test sequences."""
    g = torch.Generator().manual_seed(2036)
    n, steps = 10000, 10
    values = torch.rand(n, steps, generator=g)
    marks = torch.zeros(n, steps)
    first = torch.randint(0, steps // 2, (n,), generator=g)
    second = torch.randint(steps // 2, steps, (n,), generator=g)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = (values * marks).sum(1, keepdim=True) + 0.15 * torch.randn(n, 1, generator=g)
    X = torch.stack([values, marks], dim=-1)
    return X[:8000], y[:8000], X[8000:], y[8000:]


class _VanillaRNN(nn.Module):
    """A one-layer tanh RNN (no gates) read out linearly from its last hidden state."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.rnn, self.out = nn.RNN(2, hidden, batch_first=True), nn.Linear(hidden, 1)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


def adding_rnn(seed: int) -> Task:
    """The adding problem (10 steps) by a vanilla tanh RNN (32 hidden), MSE, batch 64, 4 epochs (500
    steps). Test metric: test MSE."""
    torch.manual_seed(seed)
    return _array_task("adding_rnn", _VanillaRNN(), _adding_sequences(), seed, batch=64, epochs=4,
                       loss=_mse, full_loss=_eval_mse, metric=("test_mse", _eval_mse))


@functools.lru_cache(maxsize=1)
def _teacher_targets():
    """Soft targets for the digits from a fixed random teacher (one seed): a 64-256-10 tanh net with
    N(0, 1/fan-in) weights, its logits scaled to a mean entropy of about 1 nat (of log 10 = 2.30),
    so that its distribution is peaked but not one-hot. The digits' own split."""
    Xtr, _, Xte, _ = _digits()
    g = torch.Generator().manual_seed(2037)
    W1 = torch.randn(64, 256, generator=g) / 8.0
    W2 = torch.randn(256, 10, generator=g) / 16.0
    mean = Xtr.mean(0)

    def logits(X):
        return torch.tanh((X - mean) @ W1 * 3.0) @ W2

    def entropy(z):
        p = torch.softmax(z, -1)
        return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())

    lo, hi = 0.1, 100.0  # the logits' scale, by bisection on the training set's mean entropy
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if entropy(mid * logits(Xtr)) > 1.0 else (lo, mid)
    scale = (lo * hi) ** 0.5
    return (Xtr, torch.softmax(scale * logits(Xtr), -1), Xte, torch.softmax(scale * logits(Xte), -1))


def _kl_of(logits, p):
    """KL(teacher ‖ student), per row, averaged: the soft cross-entropy less the teacher's entropy,
    so that the loss has no constant offset for the ratios to hide in."""
    return (torch.xlogy(p, p) - p * F.log_softmax(logits, -1)).sum(-1).mean()


def _kl(model, x, p):
    return _kl_of(model(x), p)


@torch.no_grad()
def _eval_kl(model, X, p):
    return float(_kl_of(model(X).double(), p.double()))


@torch.no_grad()
def _teacher_agreement(model, X, p):
    return float((model(X).argmax(-1) == p.argmax(-1)).float().mean())


def digits_distill(seed: int) -> Task:
    """A 64-32-10 ReLU student matching a fixed teacher's soft targets on the digits (the KL
    divergence from the teacher's distribution to the student's), batch 32, 8 epochs (296 steps).
    Test metric: agreement with the teacher's top class on the test digits."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return _array_task("digits_distill", model, _teacher_targets(), seed, batch=32, epochs=8,
                       loss=_kl, full_loss=_eval_kl, metric=("test_acc", _teacher_agreement))


# ---------------------------------------------------------------------------------------------
# Held out of round 23: two more kinds of task not in the selection (a physics-informed net,
# whose loss is the residual of a differential equation in the net's second derivative with
# respect to its input, on fresh collocation points each step; a focal loss on classes of very
# unequal size), fixed from plain runs at seed 0 before any QLAB run on them. pinn_poisson was
# first tried with the solution sin(πx) + ½sin(2πx) + ¼sin(5πx), where Adam at lr 0.01 ended at
# 0.0012 (below the floor); then with modes up to 9π and 12π, where no plain run of Adam left the
# starting plateau; set to 1, 3 and 5: at seed 0 Adam's best run ends at 0.037 (lr 0.01; 0.154
# and 0.130 beside it), heavy ball's at 0.222 (lr 0.1) and SGD's at 0.229 (lr 0.1; lr 1 diverges),
# the plateau of u ≈ 0 that neither leaves in 800 steps: there the task tests that QLAB-SGD and
# -Momentum do not blow up, and Adam's step length. focal_unequal at γ = 2, 10 epochs: SGD 0.163
# (lr 1; at lr 3, off the grid, 0.45), heavy ball 0.167 (lr 0.1), Adam 0.122 (lr 0.01), from 1.11.
# ---------------------------------------------------------------------------------------------
_PINN_MODES = ((1.0, 1.0), (3.0, 0.5), (5.0, 0.3))  # u*(x) = Σ a·sin(kπx): (k, a)
_PINN_SCALE = sum(a * (k * math.pi) ** 2 for k, a in _PINN_MODES)  # the largest |u*''| can be


def _pinn_solution(x):
    return sum(a * torch.sin(k * math.pi * x) for k, a in _PINN_MODES)


def _pinn_source(x):
    """f = u*'' of the solution above over _PINN_SCALE (the sum of its modes' amplitudes), so
    that the residual starts near 1."""
    f = sum(-a * (k * math.pi) ** 2 * torch.sin(k * math.pi * x) for k, a in _PINN_MODES)
    return f / _PINN_SCALE


def _pinn_residual_loss(model, x, f):
    """mean((u'' / _PINN_SCALE − f)²) on the collocation points plus u(0)² + u(1)²; the second
    derivative by double backward, under enable_grad so the probe's no_grad forward can take it."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = model(x)
        du, = torch.autograd.grad(u.sum(), x, create_graph=True)
        d2u, = torch.autograd.grad(du.sum(), x, create_graph=True)
        ends = model(torch.tensor([[0.0], [1.0]], dtype=x.dtype))
        return ((d2u / _PINN_SCALE - f) ** 2).mean() + (ends ** 2).sum()


def pinn_poisson(seed: int) -> Task:
    """A physics-informed 1-32-32-1 tanh net solving u'' = f on [0, 1] with u(0) = u(1) = 0 (the
    solution three sines), 64 fresh uniform collocation points a step, 800 steps. Train loss: the
    same loss on 512 fixed evenly spaced points; test metric: the relative L2 error of u against the
    exact solution on 1000 points."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 1))
    steps = 800
    grid = (torch.arange(512, dtype=torch.float32) + 0.5).unsqueeze(1) / 512
    fgrid = _pinn_source(grid)
    xt = torch.linspace(0, 1, 1000).unsqueeze(1)
    ut = _pinn_solution(xt)

    def batches():
        g = torch.Generator().manual_seed(10_000 + seed)
        for _ in range(steps):
            x = torch.rand(64, 1, generator=g)
            yield x, _pinn_source(x)

    def train_loss(m):
        return float(_pinn_residual_loss(m, grid, fgrid).detach())

    @torch.no_grad()
    def rel_error(m):
        return float((m(xt) - ut).norm() / ut.norm())

    return Task("pinn_poisson", model, batches, _pinn_residual_loss, train_loss,
                lambda m: ("test_rel_l2", rel_error(m)), steps)


@functools.lru_cache(maxsize=1)
def _unequal_classes():
    """Five classes of sizes in proportion 60 : 20 : 10 : 6 : 4, 5 % of labels flipped, 20
    features (10 informative)."""
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=4000, n_features=20, n_informative=10, n_redundant=4,
                               n_classes=5, n_clusters_per_class=2,
                               weights=[0.6, 0.2, 0.1, 0.06, 0.04], flip_y=0.05, random_state=11)
    return _standardised_split(X, y, 3000)


def _focal_of(logits, y, gamma=2.0):
    """The focal loss: cross-entropy weighted by (1 − p_y)^γ, γ = 2, so well-classified rows
    count little and the rare classes' errors count most."""
    logp = F.log_softmax(logits, -1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def _focal(model, x, y):
    return _focal_of(model(x), y)


@torch.no_grad()
def _eval_focal(model, X, y):
    return float(_focal_of(model(X).double(), y))


@torch.no_grad()
def _balanced_acc(model, X, y):
    pred = model(X).argmax(-1)
    return float(torch.stack([(pred[y == c] == c).float().mean() for c in y.unique()]).mean())


def focal_unequal(seed: int) -> Task:
    """A 20-64-64-5 ReLU MLP with the focal loss on five classes of very unequal size, batch 64,
    10 epochs (460 steps). Test metric: balanced accuracy (the mean of the per-class recalls)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 5))
    return _array_task("focal_unequal", model, _unequal_classes(), seed, batch=64, epochs=10,
                       loss=_focal, full_loss=_eval_focal, metric=("test_bal_acc", _balanced_acc))


# ---------------------------------------------------------------------------------------------
# Held out of round 24: two more kinds of task not in the selection (a variational autoencoder,
# whose loss draws its latent noise in the forward, so that QLAB's probe forward replays the
# draw; a sequence labeller trained by CTC, a loss that sums over every alignment of the labels
# to the frames by dynamic programming), fixed from plain runs at seed 0 before any QLAB run on
# them. digits_vae, 6 epochs: Adam 0.182 (lr 0.01; 0.208 at 0.1, 0.244 at 1e-3), heavy ball 0.189
# (lr 1, the grid's largest; 0.190 at lr 3 off the grid), SGD 0.226 (lr 1; 0.212 at lr 3), from
# 0.492. ctc_frames, frame noise 1.3, 3 epochs: Adam 0.170 (lr 0.01), SGD 0.189 (lr 0.1), heavy ball
# 0.207 (lr 0.01), from 6.15, every other run at or above the plateau of all-blank frames (~1.7).
# With noise 0.8 Adam at lr 0.01 ended at 0.014, near the floor.
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digit_pixels():
    """The digits' pixels in [0, 1] as Bernoulli means, and the mean binary entropy of the
    training pixels (the reconstruction term's floor, taken off so that a perfect fit reads 0)."""
    Xtr, _, Xte, _ = _digits()
    q = Xtr.double().clamp(1e-12, 1 - 1e-12)
    entropy = float(-(q * q.log() + (1 - q) * (1 - q).log()).mean())
    return Xtr, Xte, entropy


class _DigitsVAE(nn.Module):
    """64-32-(2×4) encoder, 4-32-64 decoder (tanh), a Gaussian latent; forward returns the decoder's
    logits, μ and log σ², the latent drawn with torch's default generator unless ``eps`` is given."""

    def __init__(self, latent: int = 4):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 32), nn.Tanh(), nn.Linear(32, 64))

    def forward(self, x, eps=None):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        eps = torch.randn_like(mu) if eps is None else eps
        return self.dec(mu + (0.5 * logvar).exp() * eps), mu, logvar


def _neg_elbo_of(logits, mu, logvar, x, entropy):
    """The negative ELBO per pixel: the reconstruction's binary cross-entropy less the pixels' own
    entropy (so ≥ 0), plus the latent's KL from N(0, I), per row over the 64 pixels, averaged."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
    return (recon + kl).mean() / 64 - entropy


def digits_vae(seed: int) -> Task:
    """A variational autoencoder on the digits' pixels, the latent noise drawn in the forward
    (reparameterised), batch 32, 6 epochs (222 steps). Train loss: the negative ELBO per
    pixel on the training set, with one fixed latent draw; test metric: the same on the test set."""
    torch.manual_seed(seed)
    model = _DigitsVAE()
    Xtr, Xte, entropy = _digit_pixels()

    def loss(m, x, _):
        return _neg_elbo_of(*m(x), x, entropy)

    @torch.no_grad()
    def full(m, X, _):
        eps = torch.randn(len(X), 4, generator=torch.Generator().manual_seed(2038))
        logits, mu, logvar = m(X, eps)
        return float(_neg_elbo_of(logits.double(), mu.double(), logvar.double(), X.double(),
                                  entropy))

    data = (Xtr, torch.zeros(len(Xtr)), Xte, torch.zeros(len(Xte)))
    return _array_task("digits_vae", model, data, seed, batch=32, epochs=6, loss=loss,
                       full_loss=full, metric=("test_neg_elbo", full))


_CTC_FRAMES, _CTC_SYMBOLS, _CTC_MAX_LABELS = 24, 4, 5


@functools.lru_cache(maxsize=1)
def _ctc_sequences():
    """Label sequences of 3-5 symbols from 4 (no symbol twice in a row), each symbol held for 2-4
    frames with 0-2 blank frames before it and blank frames to the end of 24; a frame's 8 features
    are its class's fixed prototype (blank included) plus N(0, 1.3²). y: (length, labels padded
    with 0). 3000 training and 1000 test sequences, from one fixed seed."""
    g = torch.Generator().manual_seed(2039)
    n = 4000
    protos = torch.randn(_CTC_SYMBOLS + 1, 8, generator=g)
    frames = torch.zeros(n, _CTC_FRAMES, dtype=torch.long)  # 0: blank
    y = torch.zeros(n, 1 + _CTC_MAX_LABELS, dtype=torch.long)
    for i in range(n):
        length = int(torch.randint(3, _CTC_MAX_LABELS + 1, (1,), generator=g))
        t, prev = 0, 0
        for j in range(length):
            s = prev
            while s == prev:
                s = 1 + int(torch.randint(0, _CTC_SYMBOLS, (1,), generator=g))
            t += int(torch.randint(0, 3, (1,), generator=g))
            hold = 2 + int(torch.randint(0, 3, (1,), generator=g))
            frames[i, t:t + hold] = s
            t += hold
            y[i, 1 + j], prev = s, s
        y[i, 0] = length
    X = protos[frames] + 1.3 * torch.randn(n, _CTC_FRAMES, 8, generator=g)
    return X[:3000], y[:3000], X[3000:], y[3000:]


class _FrameConv(nn.Module):
    """Three 1-D convolutions over the frames (8 → 32 → 32 channels, width 5; a 1×1 head to the
    4 symbols and the blank), giving per-frame log-probabilities, (frames, batch, classes)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(8, 32, 5, padding=2), nn.ReLU(),
                                 nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(),
                                 nn.Conv1d(32, _CTC_SYMBOLS + 1, 1))

    def forward(self, x):
        return F.log_softmax(self.net(x.transpose(1, 2)), dim=1).permute(2, 0, 1)


def _ctc_of(logp, y):
    """CTC per label (torch's "mean": each sequence's loss over its length, then the batch mean)."""
    lengths = y[:, 0]
    frames = torch.full((y.shape[0],), logp.shape[0], dtype=torch.long)
    return F.ctc_loss(logp, y[:, 1:], frames, lengths, blank=0, reduction="mean")


def _ctc(model, x, y):
    return _ctc_of(model(x), y)


@torch.no_grad()
def _eval_ctc(model, X, y):
    return float(_ctc_of(model(X).double(), y))


@torch.no_grad()
def _ctc_exact(model, X, y):
    """The share of test sequences whose greedy decoding (the best class per frame, repeats merged,
    blanks dropped) is the label sequence exactly."""
    best = model(X).argmax(-1).T  # (batch, frames)
    hits = 0
    for row, labels in zip(best.tolist(), y.tolist()):
        out = [s for k, s in enumerate(row) if s != 0 and (k == 0 or s != row[k - 1])]
        hits += out == labels[1:1 + labels[0]]
    return hits / len(y)


def ctc_frames(seed: int) -> Task:
    """A 1-D convolutional sequence labeller trained by CTC on noisy frames of 3-5 symbols, batch 32,
    3 epochs (279 steps). Test metric: the exact-match rate of greedy decoding."""
    torch.manual_seed(seed)
    return _array_task("ctc_frames", _FrameConv(), _ctc_sequences(), seed, batch=32,
                       epochs=3, loss=_ctc, full_loss=_eval_ctc,
                       metric=("test_exact", _ctc_exact))


# ---------------------------------------------------------------------------------------------
# Held out of round 25: two density models fitted by maximum likelihood, kinds not in the selection
# (a normalizing flow, whose loss carries the log-determinants of its coupling layers; a mixture
# density network, whose loss is a log-sum-exp over mixture components), each loss less the data's
# own entropy so that it is ≥ 0 in expectation and reads 0 at the true density. Budgets fixed from
# plain runs at seed 0 before any QLAB run on them. ring_flow, 10 epochs: Adam 0.383 (lr 1e-3;
# 0.404 at 0.01), heavy ball 0.449 (lr 0.01), SGD 0.581 (lr 0.01), from 1.22; at 3 epochs Adam
# reached 0.504. wave_mdn, 10 epochs: Adam 0.330 (lr 0.01), heavy ball 0.686 (lr 1e-3), SGD 0.909
# (lr 0.01), from 2.25; at 4 epochs Adam reached 0.411. Neither near the floor.
# ---------------------------------------------------------------------------------------------
_RING_MODES, _RING_RADIUS, _RING_SIGMA = 8, 2.0, 0.2


def _ring_centres():
    """The ring's eight modes (float64), at radius 2."""
    angles = torch.arange(_RING_MODES, dtype=torch.float64) * (2 * math.pi / _RING_MODES)
    return _RING_RADIUS * torch.stack([angles.cos(), angles.sin()], -1)


def _ring_log_density(x):
    """log p(x) of the eight-Gaussian ring (float64): modes at radius 2, σ = 0.2, equal weights."""
    d2 = ((x.double()[:, None, :] - _ring_centres()[None]) ** 2).sum(-1)
    log_n = -d2 / (2 * _RING_SIGMA ** 2) - math.log(2 * math.pi * _RING_SIGMA ** 2)
    return torch.logsumexp(log_n, -1) - math.log(_RING_MODES)


@functools.lru_cache(maxsize=1)
def _ring_points():
    """3000 training and 1000 test points of the ring, one fixed seed; and the entropy per
    dimension of the true density estimated on the training points (the loss's floor)."""
    g = torch.Generator().manual_seed(2040)
    n = 4000
    mode = torch.randint(0, _RING_MODES, (n,), generator=g).double()
    angle = mode * (2 * math.pi / _RING_MODES)
    X = _RING_RADIUS * torch.stack([angle.cos(), angle.sin()], -1)
    X = (X + _RING_SIGMA * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()
    entropy = float(-_ring_log_density(X[:3000]).mean() / 2)
    return X[:3000], X[3000:], entropy


class _Coupling(nn.Module):
    """One affine coupling: the coordinate ``keep`` passes through and sets the scale (tanh-bounded
    log) and shift of the other."""

    def __init__(self, keep: int, hidden: int = 32):
        super().__init__()
        self.keep = keep
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, x):
        a, b = x[:, self.keep:self.keep + 1], x[:, 1 - self.keep:2 - self.keep]
        log_s, t = self.net(a).chunk(2, -1)
        log_s = torch.tanh(log_s)
        b = b * log_s.exp() + t
        out = torch.cat([a, b], -1) if self.keep == 0 else torch.cat([b, a], -1)
        return out, log_s.squeeze(-1)


class _RingFlow(nn.Module):
    """Six couplings alternating the kept coordinate, a learned per-coordinate scale first, onto a
    standard normal; forward returns the log-density of each row."""

    def __init__(self, layers: int = 6):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(2))
        self.couplings = nn.ModuleList(_Coupling(k % 2) for k in range(layers))

    def forward(self, x):
        z = x * self.log_scale.exp()
        log_det = self.log_scale.sum().expand(len(x))
        for c in self.couplings:
            z, ld = c(z)
            log_det = log_det + ld
        return -0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi) + log_det


def ring_flow(seed: int) -> Task:
    """A normalizing flow (affine couplings) fitted to an eight-Gaussian ring by maximum likelihood,
    batch 32, 10 epochs (930 steps). Train loss: the negative log-likelihood per dimension less the
    true density's entropy (0 at the true density); test metric: the same on the test points."""
    torch.manual_seed(seed)
    Xtr, Xte, entropy = _ring_points()

    def loss(m, x, _):
        return -m(x).mean() / 2 - entropy

    @torch.no_grad()
    def full(m, X, _):
        return float(-m(X).double().mean() / 2 - entropy)

    data = (Xtr, torch.zeros(len(Xtr)), Xte, torch.zeros(len(Xte)))
    return _array_task("ring_flow", _RingFlow(), data, seed, batch=32, epochs=10, loss=loss,
                       full_loss=full, metric=("test_nll_excess", full))


_MDN_NOISE, _MDN_COMPONENTS = 0.05, 5


def _wave(y):
    return y + 0.3 * torch.sin(2 * math.pi * y)


@functools.lru_cache(maxsize=1)
def _inverse_wave():
    """y ~ U(0, 1), x = y + 0.3·sin(2πy) + N(0, 0.05²): predicting y from x is multimodal (up to
    three branches). 3000 training and 1000 test pairs, one fixed seed; and the conditional entropy
    H(y | x) estimated on the training pairs from the true density (quadrature over y in float64),
    the loss's floor."""
    g = torch.Generator().manual_seed(2041)
    n = 4000
    y = torch.rand(n, generator=g, dtype=torch.float64)
    x = _wave(y) + _MDN_NOISE * torch.randn(n, generator=g, dtype=torch.float64)
    grid = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000  # midpoints on [0, 1]

    def log_joint(xv, yv):  # log p(x, y) with p(y) = 1 on [0, 1]
        return (-(xv - _wave(yv)) ** 2 / (2 * _MDN_NOISE ** 2)
                - 0.5 * math.log(2 * math.pi * _MDN_NOISE ** 2))

    xtr, ytr = x[:3000], y[:3000]
    log_px = torch.cat([torch.logsumexp(log_joint(xb[:, None], grid[None]), -1)
                        for xb in xtr.split(500)]) - math.log(len(grid))
    entropy = float(-(log_joint(xtr, ytr) - log_px).mean())
    return (xtr.float()[:, None], ytr.float()[:, None], x[3000:].float()[:, None],
            y[3000:].float()[:, None], entropy)


class _MixtureDensity(nn.Module):
    """1-32-32 tanh trunk; heads for the weights' logits, the means and the log standard deviations
    of five Gaussians."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.head = nn.Linear(32, 3 * _MDN_COMPONENTS)

    def forward(self, x):
        return self.head(self.trunk(x)).chunk(3, -1)


def _mdn_nll(params, y):
    logits, mu, log_sigma = params
    log_n = -0.5 * ((y - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(F.log_softmax(logits, -1) + log_n, -1).mean()


def wave_mdn(seed: int) -> Task:
    """A mixture density network for the inverse of a wave (y from x, up to three modes), batch 32,
    10 epochs (930 steps). Train loss: the negative log-likelihood less H(y | x) (0 at the true
    conditional density); test metric: the same on the test pairs."""
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte, entropy = _inverse_wave()

    def loss(m, x, y):
        return _mdn_nll(m(x), y) - entropy

    @torch.no_grad()
    def full(m, X, y):
        return float(_mdn_nll([p.double() for p in m(X)], y.double()) - entropy)

    return _array_task("wave_mdn", _MixtureDensity(), (Xtr, ytr, Xte, yte), seed, batch=32,
                       epochs=10, loss=loss, full_loss=full, metric=("test_nll_excess", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 26: two more kinds of task not in the selection (a score model trained by
# denoising score matching, whose regression target is the noise itself; ordinal regression by a
# cumulative-link model, whose class probabilities are differences of sigmoids at learned ordered
# thresholds), each loss less the true model's on the same data, so that it is ≥ 0 in expectation
# and reads 0 at the true model. Budgets fixed from plain runs at seed 0 before any QLAB run on
# them. ring_score, 5 epochs: Adam 0.054 (lr 0.01), heavy ball 0.067 (lr 0.1; lr 1 diverges), SGD
# 0.079 (lr 1, the grid's largest), from 0.454; at 3 epochs Adam reached 0.062, at 10 epochs 0.038.
# ordinal_latent, 5 epochs: Adam 0.060 (lr 0.01), heavy ball 0.100 (lr 0.1), SGD 0.168 (lr 0.1),
# from 0.555; at 3 epochs Adam reached 0.101, at 10 epochs 0.031. Not longer: both losses go below
# 0 on the training rows once the net fits their fixed noise or labels (Adam at lr 3e-3, 150
# epochs: −0.008 and −0.17).
# ---------------------------------------------------------------------------------------------
_SCORE_NOISE = 0.5


def _ring_score(x):
    """∇ log p_σ(x) in float64, p_σ the ring convolved with N(0, σ²I), σ = _SCORE_NOISE: again eight
    equal Gaussians, of variance 0.2² + σ², whose score is the posterior-weighted pull to the modes."""
    var = _RING_SIGMA ** 2 + _SCORE_NOISE ** 2
    pull = _ring_centres()[None] - x.double()[:, None, :]
    w = torch.softmax(-(pull ** 2).sum(-1) / (2 * var), -1)
    return (w[..., None] * pull).sum(1) / var


@functools.lru_cache(maxsize=1)
def _noised_ring():
    """The ring's training and test points noised once, x̃ = x + σε: one fixed ε per point, so that
    a batch's loss is a fixed function of the parameters (it replays at the probe) and the train
    loss is deterministic. (x̃, ε) of the training points, then of the test points."""
    Xtr, Xte, _ = _ring_points()
    g = torch.Generator().manual_seed(2042)
    eps = torch.randn(len(Xtr) + len(Xte), 2, generator=g)
    X = torch.cat([Xtr, Xte]) + _SCORE_NOISE * eps
    return X[:len(Xtr)], eps[:len(Xtr)], X[len(Xtr):], eps[len(Xtr):]


def _dsm_excess(s, x, eps):
    """σ²/2·‖s(x̃) + ε/σ‖² less the same for the true score at the same (x̃, ε), averaged: given x̃,
    ε/σ has mean −s*(x̃), so the expectation is σ²/2·E‖s − s*‖². The subtracted term (float64, a
    constant of the rows) removes the loss's irreducible part (0.56 on the training rows, ten times
    the best plain runs' excess) and, row by row, most of its noise."""
    ref = float(0.5 * ((_SCORE_NOISE * _ring_score(x) + eps.double()) ** 2).sum(-1).mean())
    return 0.5 * ((_SCORE_NOISE * s + eps.to(s.dtype)) ** 2).sum(-1).mean() - ref


def ring_score(seed: int) -> Task:
    """A 2-64-64-2 SiLU score model of the eight-Gaussian ring at noise σ = 0.5, by denoising score
    matching, batch 32, 5 epochs (465 steps). Train loss: the σ²-weighted DSM loss less that of
    the true score on the same rows (0 at it); test metric: the same on the test points."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                          nn.Linear(64, 2))

    def loss(m, x, eps):
        return _dsm_excess(m(x), x, eps)

    @torch.no_grad()
    def full(m, X, eps):
        return float(_dsm_excess(m(X).double(), X, eps))

    return _array_task("ring_score", model, _noised_ring(), seed, batch=32, epochs=5,
                       loss=loss, full_loss=full, metric=("test_dsm_excess", full))


_ORD_THRESHOLDS = (-3.5, -1.5, 0.0, 1.5, 3.5)  # six classes, about equally frequent


def _ordinal_score(x):
    """f*(x) of eight inputs: periodic, product, square, saturating and linear terms (two inputs
    enter only weakly); standard deviation about 2.9 on standard normal x."""
    return 1.5 * (1.5 * torch.sin(1.5 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * (x[:, 3] ** 2 - 1)
                  + torch.tanh(2 * x[:, 4]) - 0.5 * x[:, 5] + 0.3 * x[:, 6] * x[:, 7])


def _cumulative_log_probs(f, thresholds):
    """log P(y = k | f), k = 0..K, of the cumulative-link model P(y ≤ k) = σ(θ_k − f) with ordered
    thresholds θ (K,) and scores f (n,); each difference of sigmoids in log space, as
    σ(b) − σ(a) = σ(b)·σ(−a)·(1 − e^(a − b)), so that no class's probability rounds to 0 − 0."""
    z = thresholds[None] - f[:, None]
    mid = (F.logsigmoid(z[:, 1:]) + F.logsigmoid(-z[:, :-1])
           + torch.log(-torch.expm1(thresholds[:-1] - thresholds[1:])))
    return torch.cat([F.logsigmoid(z[:, :1]), mid, F.logsigmoid(-z[:, -1:])], -1)


@functools.lru_cache(maxsize=1)
def _ordinal_data():
    """x ~ N(0, I₈) and y drawn from the true model (f*, θ*), 3000 training and 1000 test rows, one
    fixed seed; and each set's mean −log P*(y | x), the loss's floor on it. That sample mean, not
    the mean of the exact entropies of P*(· | x) (the same in expectation), so that the true model
    reads exactly 0: the exact one sits 0.018 below it on the training rows, 0.024 above on the test
    rows, label noise that would shift every run's zero by more than the floor 0.01."""
    g = torch.Generator().manual_seed(2043)
    n = 4000
    X = torch.randn(n, 8, generator=g, dtype=torch.float64).float().double()  # as stored
    theta = torch.tensor(_ORD_THRESHOLDS, dtype=torch.float64)
    u = torch.rand(n, 1, generator=g, dtype=torch.float64)
    y = (u > torch.sigmoid(theta[None] - _ordinal_score(X)[:, None])).sum(-1)
    nll = -_cumulative_log_probs(_ordinal_score(X), theta).gather(1, y[:, None]).squeeze(1)
    return (X[:3000].float(), y[:3000], X[3000:].float(), y[3000:], float(nll[:3000].mean()),
            float(nll[3000:].mean()))


class _Ordinal(nn.Module):
    """An 8-32-32-1 ReLU score f(x) and five thresholds kept ordered (the first free, then softplus
    gaps; initially −2, −1, ..., 2); forward returns the six classes' log-probabilities."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                 nn.Linear(32, 1))
        k = len(_ORD_THRESHOLDS)
        self.first = nn.Parameter(torch.tensor([-(k - 1) / 2]))
        self.gaps = nn.Parameter(torch.full((k - 1,), math.log(math.e - 1)))  # softplus: 1

    def thresholds(self):
        return torch.cat([self.first, self.first + F.softplus(self.gaps).cumsum(0)])

    def forward(self, x):
        return _cumulative_log_probs(self.net(x).squeeze(-1), self.thresholds())


def ordinal_latent(seed: int) -> Task:
    """Ordinal regression of six classes with a proportional-odds model on a learned score, batch
    32, 5 epochs (465 steps). Train loss: the negative log-likelihood less the true model's on
    the same rows (0 at the true model); test metric: the same on the test rows."""
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte, h_tr, h_te = _ordinal_data()

    def loss(m, x, y):
        return F.nll_loss(m(x), y) - h_tr

    @torch.no_grad()
    def excess(m, X, y, floor):
        return float(F.nll_loss(m(X).double(), y)) - floor

    return _array_task("ordinal_latent", _Ordinal(), (Xtr, ytr, Xte, yte), seed, batch=32,
                       epochs=5, loss=loss, full_loss=functools.partial(excess, floor=h_tr),
                       metric=("test_nll_excess", functools.partial(excess, floor=h_te)))


# ---------------------------------------------------------------------------------------------
# Held out of round 27: two more kinds of task not in the selection (survival regression by Cox's
# partial likelihood, whose loss couples the rows of a batch through their risk sets; a DeepSets
# regressor, a permutation-invariant net over sets of points), each loss less the true model's
# on the same rows, so that it reads 0 at the true model (which the set regressor, seeing only the
# points, cannot reach). Budgets fixed from plain runs at seed 0 before any QLAB run on them.
# cox_survival, 5 epochs: Adam 0.075 (lr 0.01), heavy ball 0.203 (lr 0.1; lr 1 diverges), SGD 0.194
# (lr 1, the grid's largest), from 0.752; at 3 epochs Adam reached 0.134, at 10 epochs 0.027, below
# 0.03 (a first log-hazard of half this spread, standard deviation 1.05, Adam fitted to 0.002 in 5
# epochs). set_deepsets, 5 epochs: Adam 0.800 (lr 0.01), heavy ball 1.043 (lr 0.01), SGD 0.959
# (lr 0.1), from 3.01; at 3 epochs Adam reached 0.872, at 10 epochs 0.624; its floor is far above
# 0 (a plug-in of the sets' sample covariance and mean, affinely recalibrated, reads 0.34).
# ---------------------------------------------------------------------------------------------
_COX_CENSOR_RATE = 0.27  # E[λ / (λ + e^f*)] = 0.30 over x ~ N(0, I₈): 30 % of rows censored


def _cox_log_hazard(x):
    """f*(x), the true log-hazard of eight inputs (x₇ enters not at all): periodic, product, centred
    square and saturating terms, mean 0 and standard deviation about 1.87 on standard normal x."""
    return (1.5 * torch.sin(1.5 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * (x[:, 3] ** 2 - 1)
            + torch.tanh(2 * x[:, 4]) + 0.5 * x[:, 5] * x[:, 6])


@functools.lru_cache(maxsize=1)
def _survival_data():
    """x ~ N(0, I₈), event times T ~ Exp(rate e^f*(x)) and censoring times C ~ Exp(rate 0.27), one
    fixed seed; 1500 training and 500 test rows. y (float64) holds the observed time min(T, C), the
    event indicator T ≤ C and f*(x), so that a batch's loss can subtract the true model's on the
    same rows (f* is of the stored, float32-rounded x, as the model sees it)."""
    g = torch.Generator().manual_seed(2044)
    n = 2000
    X = torch.randn(n, 8, generator=g, dtype=torch.float64).float().double()  # as stored
    f = _cox_log_hazard(X)
    T = torch.empty(n, dtype=torch.float64).exponential_(generator=g) / f.exp()
    C = torch.empty(n, dtype=torch.float64).exponential_(generator=g) / _COX_CENSOR_RATE
    y = torch.stack([torch.minimum(T, C), (T <= C).double(), f], -1)
    return X[:1500].float(), y[:1500], X[1500:].float(), y[1500:]


def _breslow_nll(eta, time, event):
    """The negative Breslow partial log-likelihood of log-risks η (n,) with the given rows as the
    whole population, averaged over the events: mean over event rows i of log Σ_{j: t_j ≥ t_i} e^η_j
    − η_i. A batch without events gives 0, still as a function of η (0·η summed) so that backward
    runs; at 30 % censoring a batch of 32 has none with probability about 0.3³² ≈ 2e-17."""
    at_risk = time[None, :] >= time[:, None]  # row i's risk set; it holds i itself
    log_risk = torch.logsumexp(eta[None, :].masked_fill(~at_risk, -math.inf), -1)
    e = event.to(eta.dtype)
    return ((log_risk - eta) * e).sum() / e.sum().clamp_min(1)


def _cox_excess(eta, y):
    """The partial NLL of η less that of the true f* on the same rows (float64, a constant of the
    rows): it removes the loss's part that depends on the risk sets' sizes, which varies from batch
    to batch far more than the model's excess."""
    ref = float(_breslow_nll(y[:, 2], y[:, 0], y[:, 1]))
    return _breslow_nll(eta, y[:, 0], y[:, 1]) - ref


@torch.no_grad()
def _cindex(model, X, y):
    """Harrell's concordance index of the model's risk: of the pairs whose earlier time is an event
    (so that its order is known), the share where that row has the higher risk, ties counting half."""
    r = model(X).double().reshape(-1)
    if not bool(torch.isfinite(r).all()):  # NaN compares false: a diverged run would read 0
        return math.nan
    t, e = y[:, 0], y[:, 1]
    comparable = (t[:, None] < t[None, :]) & (e[:, None] > 0)
    wins = (r[:, None] > r[None, :]).double() + 0.5 * (r[:, None] == r[None, :]).double()
    return float(wins[comparable].mean())


def cox_survival(seed: int) -> Task:
    """Survival regression: an 8-32-32-1 SiLU log-risk under Cox's proportional hazards, 30 % of
    the rows censored, batch 32, 5 epochs (230 steps). Train loss: the negative Breslow partial
    log-likelihood within the batch (the risk sets are the batch's rows) less the true
    log-hazard's on the same rows (0 at it); the whole training set's takes its 1500 rows as one
    population. Test metric: Harrell's C-index of the risk on the test rows (higher is better)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(),
                          nn.Linear(32, 1))

    loss, full = _loss_and_full(_cox_excess, lambda out: out.squeeze(-1))

    return _array_task("cox_survival", model, _survival_data(), seed, batch=32, epochs=5,
                       loss=loss, full_loss=full, metric=("test_cindex", _cindex))


_SET_SIZE, _SET_NOISE = 12, 0.3


def _set_target(mean, log_scale):
    """g(μ, s) = log det Σ + ½‖μ‖ of a set's generating Gaussian N(μ, R diag(s²) Rᵀ): the rotation
    drops out of the determinant, log det Σ = 2 Σ log s."""
    return 2 * log_scale.sum(-1) + 0.5 * mean.norm(dim=-1)


@functools.lru_cache(maxsize=1)
def _gaussian_sets():
    """Sets of 12 points in R² from N(μ, R diag(s²) Rᵀ): μ ~ N(0, I₂), s log-uniform in [0.3, 2]
    per axis, R a uniform rotation; the target g(μ, s) plus N(0, 0.3²) noise; one fixed seed, 2000
    training and 500 test sets. X (n, 12, 2); y (n, 2, float64): the noisy target and g itself."""
    g = torch.Generator().manual_seed(2045)
    n = 2500
    mean = torch.randn(n, 2, generator=g, dtype=torch.float64)
    log_scale = torch.empty(n, 2, dtype=torch.float64).uniform_(math.log(0.3), math.log(2.0),
                                                                 generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    c, s = angle.cos(), angle.sin()
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    z = torch.randn(n, _SET_SIZE, 2, generator=g, dtype=torch.float64)
    X = mean[:, None] + (z * log_scale.exp()[:, None]) @ rot.transpose(-1, -2)
    clean = _set_target(mean, log_scale)
    noisy = clean + _SET_NOISE * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.stack([noisy, clean], -1)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:]


class _DeepSets(nn.Module):
    """φ: 2-64-64 SiLU on each point, the mean over the set, ρ: 64-64-1 SiLU; a set (…, 12, 2) in,
    one number out, the same for every order of its points."""

    def __init__(self):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU())
        self.rho = nn.Sequential(nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.rho(self.phi(x).mean(-2)).squeeze(-1)


def _set_excess(pred, y):
    """The MSE to the noisy targets less that of the noise-free g on the same rows (float64, a
    constant of the rows, the rows' own noise variance)."""
    ref = float(((y[:, 1] - y[:, 0]) ** 2).mean())
    return ((pred - y[:, 0].to(pred.dtype)) ** 2).mean() - ref


def set_deepsets(seed: int) -> Task:
    """A DeepSets regressor of a Gaussian set's log-determinant and mean's norm from 12 of its
    points, batch 32, 5 epochs (310 steps). Train loss: the MSE less that of the noise-free target
    g(μ, s) on the same rows, the excess over the predictor that knows the set's generating
    parameters. The net sees only the 12 points, from which (μ, s) are not recoverable, so the
    excess does not reach 0: in expectation it is at least the mean posterior variance of g given
    the points (at most 0.34, see above). Test metric: the same excess on the test sets."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_set_excess)

    return _array_task("set_deepsets", _DeepSets(), _gaussian_sets(), seed, batch=32, epochs=5,
                       loss=loss, full_loss=full, metric=("test_mse_excess", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 28: two more kinds of task not in the selection (listwise learning to rank, a
# KL divergence between two softmaxes over each query's documents, which couples a query's scores;
# LISTA, ISTA unrolled into a net of five soft-thresholding layers whose weights and thresholds are
# learned, started at ISTA itself). Budgets fixed from plain runs at seed 0 before any QLAB run.
# rank_listnet, 5 epochs: Adam 0.292 (lr 0.01), heavy ball 0.292 (lr 0.1), SGD 0.303 (lr 1), from
# 0.740; at 3 epochs SGD reached 0.319 (Adam 0.322), at 10 epochs Adam 0.242, toward the floor of
# about 0.21 that the hidden features leave (a first s*, a random tanh net of [x, h], was nearly
# linear in x and fitted to its floor within 3 epochs: cosine features took its place).
# lista_sparse, 6 epochs: Adam 0.536 (lr 0.01), heavy ball 0.910 (lr 1e-3), SGD 0.909 (lr 0.01),
# from 1.075; at 3 epochs Adam reached 0.898 (lr 1e-3), at 10 epochs 0.306 (lr 0.01); SGD and heavy
# ball stay near 0.9 at every budget tried (3 to 10 epochs).
# ---------------------------------------------------------------------------------------------
_RANK_DOCS, _RANK_FREQ = 10, 1.25


@functools.lru_cache(maxsize=1)
def _ranking_queries():
    """Queries of 10 documents, each with seen features x ~ N(0, I₁₂) and hidden h ~ N(0, I₂); the
    true score s*(x, h) is a fixed random 14-32-1 net of cosine features of [x, h] (frequencies
    N(0, 1.25²/14) per input, phases uniform, output weights N(0, 1)), scaled to standard deviation
    1.5 over the documents; one fixed seed, 1200 training and 300 test queries. X (n, 10, 12); y
    (n, 10, float64): the target P = softmax(s*) over each query's documents (s* of the stored,
    float32-rounded x). h holds 25 % of the variance of s*: a scorer of x alone, E[s* | x], still
    reads a KL of 0.20 on the test queries (0.21 on the training ones)."""
    g = torch.Generator().manual_seed(2046)
    freq = torch.randn(14, 32, generator=g, dtype=torch.float64) * _RANK_FREQ / math.sqrt(14)
    phase = 2 * math.pi * torch.rand(32, generator=g, dtype=torch.float64)
    out = torch.randn(32, generator=g, dtype=torch.float64)
    n = 1500
    X = torch.randn(n, _RANK_DOCS, 12, generator=g, dtype=torch.float64).float().double()
    h = torch.randn(n, _RANK_DOCS, 2, generator=g, dtype=torch.float64)
    s = torch.cos(torch.cat([X, h], -1) @ freq + phase) @ out
    p = torch.softmax(1.5 * s / s.std(), -1)
    return X[:1200].float(), p[:1200], X[1200:].float(), p[1200:]


def _listnet_kl(scores, p):
    """The mean over queries of KL(P ‖ Q), Q = softmax(scores) over each query's documents: the
    target's Σ P log P in float64 (a constant of the rows) less the cross-entropy Σ P log Q. It
    is 0 only at scores equal to s* up to a constant per query, out of reach without h."""
    neg_entropy = float((p * p.log()).sum(-1).mean())
    return neg_entropy - (p.to(scores.dtype) * torch.log_softmax(scores, -1)).sum(-1).mean()


_NDCG_DISCOUNT = 1 / torch.log2(torch.arange(2, 5, dtype=torch.float64))  # ranks 1–3


@torch.no_grad()
def _ndcg3(model, X, p):
    """NDCG@3 with the target probabilities P as gains, the mean over queries of Σ_{r ≤ 3} P of the
    model's r-th document / log₂(r + 1) over the same for the documents in P's order (equal scores
    rank in the documents' order)."""
    s = model(X).double().squeeze(-1)
    if not bool(torch.isfinite(s).all()):  # NaN sorts unpredictably: a diverged run would score
        return math.nan
    top = s.sort(dim=-1, descending=True, stable=True).indices[:, :3]
    dcg = (p.gather(1, top) * _NDCG_DISCOUNT).sum(-1)
    ideal = (p.sort(-1, descending=True).values[:, :3] * _NDCG_DISCOUNT).sum(-1)
    return float((dcg / ideal).mean())


def rank_listnet(seed: int) -> Task:
    """Listwise learning to rank (ListNet's top-one loss): a 12-32-32-1 SiLU scorer of each
    document, batch 16 queries of 10 documents, 5 epochs (375 steps). Train loss: the mean over
    the batch's queries of KL(P ‖ Q), P = softmax(s*) the target, Q = softmax of the scores; its
    floor is above 0 (about 0.21), the scorer not seeing the hidden features. Test metric: NDCG@3
    of the scores' ranking of each test query's documents, gains P (higher is better)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(),
                          nn.Linear(32, 1))

    loss, full = _loss_and_full(_listnet_kl, lambda out: out.squeeze(-1))

    return _array_task("rank_listnet", model, _ranking_queries(), seed, batch=16, epochs=5,
                       loss=loss, full_loss=full, metric=("test_ndcg3", _ndcg3))


_LISTA_ACTIVE, _LISTA_NOISE, _LISTA_LAMBDA, _LISTA_STEPS = 4, 0.1, 0.1, 5


@functools.lru_cache(maxsize=1)
def _sparse_codes():
    """A dictionary D (20 × 40, N(0, 1) entries, columns scaled to unit norm); codes z* with 4
    non-zeros at uniform positions, each sign · (0.5 + |N(0, 1)|); observations y = D z* + N(0, 0.1²
    I); one fixed seed, 2000 training and 500 test rows. X (n, 20): y; targets (n, 40, float64): z*;
    and D (float64)."""
    g = torch.Generator().manual_seed(2047)
    D = torch.randn(20, 40, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0)
    n = 2500
    support = torch.rand(n, 40, generator=g, dtype=torch.float64).argsort(-1)[:, :_LISTA_ACTIVE]
    v = torch.randn(n, _LISTA_ACTIVE, generator=g, dtype=torch.float64)
    z = torch.zeros(n, 40, dtype=torch.float64).scatter_(1, support, v.sign() * (0.5 + v.abs()))
    X = z @ D.T + _LISTA_NOISE * torch.randn(n, 20, generator=g, dtype=torch.float64)
    return X[:2000].float(), z[:2000], X[2000:].float(), z[2000:], D


def _soft(u, theta):
    return u.sign() * F.relu(u.abs() - theta)


class _LISTA(nn.Module):
    """Five unrolled ISTA steps, z₀ = soft(W y, θ₀), z_k = soft(W y + S z_{k−1}, θ_k), the output
    z₄; W (40 × 20), S (40 × 40) and per-step thresholds θ_k ∈ R⁴⁰ (kept positive: softplus of a
    free parameter) all learned. Started at ISTA on ½‖y − D z‖² + λ‖z‖₁, λ = 0.1: W = Dᵀ/L,
    S = I − DᵀD/L, θ = λ/L, L the largest eigenvalue of DᵀD, so it depends on D alone."""

    def __init__(self, D):
        super().__init__()
        L = float(torch.linalg.eigvalsh(D.T @ D).max())
        self.W = nn.Parameter((D.T / L).float())
        self.S = nn.Parameter((torch.eye(D.shape[1], dtype=D.dtype) - D.T @ D / L).float())
        theta = math.log(math.expm1(_LISTA_LAMBDA / L))  # softplus⁻¹(λ/L)
        self.theta = nn.Parameter(torch.full((_LISTA_STEPS, D.shape[1]), theta))

    def forward(self, y):
        b = y @ self.W.T
        thresholds = F.softplus(self.theta)
        z = _soft(b, thresholds[0])
        for k in range(1, _LISTA_STEPS):
            z = _soft(b + z @ self.S.T, thresholds[k])
        return z


def _code_mse(pred, z):
    """‖ẑ − z*‖² over the 4 non-zeros of z*, the mean over rows: ISTA's start reads about 1."""
    return ((pred - z.to(pred.dtype)) ** 2).sum(-1).mean() / _LISTA_ACTIVE


def lista_sparse(seed: int) -> Task:
    """Sparse coding by LISTA: 4-sparse codes in a 40-atom dictionary from 20 noisy measurements,
    batch 32, 6 epochs (372 steps). Train loss: the squared error of the code, ‖ẑ − z*‖² per
    non-zero of z* (the mean over rows of the sum over the 40 coordinates, divided by 4); with the
    noise even least squares on the true support reads 0.012. Test metric: the same on the test
    rows (lower is better). The net starts at ISTA whatever the seed: seeds differ only in the
    batches' order."""
    torch.manual_seed(seed)  # draws nothing: kept for uniformity
    Xtr, ztr, Xte, zte, D = _sparse_codes()

    loss, full = _loss_and_full(_code_mse)

    return _array_task("lista_sparse", _LISTA(D), (Xtr, ztr, Xte, zte), seed, batch=32,
                       epochs=6, loss=loss, full_loss=full, metric=("test_code_mse", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 29: two more kinds of sequence model not in the selection (a diagonal linear
# state-space model, LRU-style: a learned real decay per channel, an explicit linear recurrence,
# two layers with SiLU readouts, on a regression that needs the inputs of 10 and 20 steps before;
# a dilated causal convolutional net, WaveNet-like gated residual blocks, forecasting a noisy
# Lorenz coordinate), each an MSE on noisy targets, the noise alone costing 0.09. Budgets fixed
# from plain runs at seed 0 before any QLAB run. ssm_recall, 6 epochs: Adam 0.424 (lr 0.01), heavy
# ball 0.458 (lr 0.01; lr 0.1 diverges), SGD 0.534 (lr 0.1; lr 1 diverges), from 1.197; at 3
# epochs 0.531 (lr 1e-3), 0.583 and 0.576, at 10 epochs 0.391, 0.428 and 0.461 (Adam at lr 1e-3
# for 60 epochs still ends at 0.275). tcn_forecast, 3 epochs: Adam 0.323 (lr 0.01), heavy ball
# 0.387 (lr 0.1; lr 1 diverges), SGD 0.486 (lr 0.1; lr 1 diverges), from 1.311; at 2 epochs 0.315,
# 0.421 and 0.530, at 6 epochs 0.276, 0.322 and 0.429 (Adam at lr 0.01 wanders between 0.315 and
# 0.323 from 2 to 4 epochs before it falls on; at lr 1e-3 0.436, 0.335 and 0.283 at 3, 6 and 10
# epochs). A first series, Mackey-Glass (τ 17 or 30, noise 0.25), was fitted to within 0.04 of
# its noise floor by Adam in 4 epochs: hence Lorenz. One plain run takes 2–3 s (ssm_recall) and
# 1.5–2 s (tcn_forecast) on one thread here.
# ---------------------------------------------------------------------------------------------
_RECALL_STEPS, _RECALL_FROM, _RECALL_NOISE = 48, 24, 0.3
_RECALL_BUMPS = ((2.0, 1.5), (10.0, 3.0), (20.0, 4.0))  # (lag, width) of each kernel's bump


def _noisy_mse(pred, y):
    """The MSE of the predictions to the noisy targets y[..., 0] (y[..., 1], the noise-free
    targets, is not used)."""
    return ((pred - y[..., 0].to(pred.dtype)) ** 2).mean()


@functools.lru_cache(maxsize=1)
def _recall_sequences():
    """Sequences of 48 steps of x_t ~ N(0, I₃); three fixed unit directions m_j read s_j,t = m_j ·
    x_t and three causal kernels κ_j over lags 0–23, Gaussian bumps at lags 2, 10 and 20 (widths
    1.5, 3 and 4 steps) of unit L2 norm, smooth them: u_j,t = Σ_k κ_j(k) s_j,t−k, each N(0, 1).
    The target at steps 24–47 (where every lag lies in the sequence): g_t = c·(0.6 u_1,t +
    tanh(1.5 u_2,t)·u_3,t), c scaling g to unit standard deviation over all the sequences (the
    product holds 60 % of its variance), plus N(0, 0.3²) noise (the noise alone costs 0.09). One
    fixed seed, 2000 training and 500 test sequences. X (n, 48, 3); y (n, 24, 2, float64): the
    noisy target and g (of the stored, float32-rounded x)."""
    g = torch.Generator().manual_seed(2048)
    mix = torch.randn(3, 3, generator=g, dtype=torch.float64)
    mix = mix / mix.norm(dim=1, keepdim=True)  # row j: m_j
    n, lags = 2500, _RECALL_STEPS - _RECALL_FROM
    X = torch.randn(n, _RECALL_STEPS, 3, generator=g, dtype=torch.float64).float().double()
    k = torch.arange(lags, dtype=torch.float64)
    kernels = torch.stack([torch.exp(-(k - c) ** 2 / (2 * w ** 2)) for c, w in _RECALL_BUMPS])
    kernels = kernels / kernels.norm(dim=1, keepdim=True)  # (3, 24)
    s = X @ mix.T
    u = sum(kernels[:, j] * s[:, _RECALL_FROM - j:_RECALL_STEPS - j] for j in range(lags))
    clean = 0.6 * u[..., 0] + torch.tanh(1.5 * u[..., 1]) * u[..., 2]
    clean = clean / clean.std()
    noisy = clean + _RECALL_NOISE * torch.randn(n, lags, generator=g, dtype=torch.float64)
    y = torch.stack([noisy, clean], -1)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:]


class _LinearRecurrence(nn.Module):
    """One LRU-style layer: u_t = B x_t (no bias), h_t = a ⊙ h_{t−1} + u_t from h_{−1} = 0, the
    decay a = exp(−softplus(ν)) ∈ (0, 1) learned per channel (started at a = exp(−1/τ), the time
    constants τ log-spaced from 1 to 32 steps), then a SiLU MLP on each h_t. The recurrence by an
    explicit loop over the steps."""

    def __init__(self, d_in: int, d_out: int, channels: int = 32, hidden: int = 64):
        super().__init__()
        self.B = nn.Linear(d_in, channels, bias=False)
        tau = 32.0 ** torch.linspace(0, 1, channels)
        self.nu = nn.Parameter(torch.log(torch.expm1(1 / tau)))
        self.readout = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(),
                                     nn.Linear(hidden, d_out))

    def decay(self):
        return torch.exp(-F.softplus(self.nu))

    def states(self, x):
        u, a = self.B(x), self.decay()
        h, hs = torch.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):
            h = a * h + u[:, t]
            hs.append(h)
        return torch.stack(hs, 1)

    def forward(self, x):
        return self.readout(self.states(x))


class _SSMRecall(nn.Module):
    """Two stacked linear recurrences: 3 inputs → 32 channels → MLP 32-64-32, then 32 → 32
    channels → MLP 32-64-1; (n, 48, 3) in, a prediction at every step (n, 48) out."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(_LinearRecurrence(3, 32), _LinearRecurrence(32, 1))

    def forward(self, x):
        return self.layers(x).squeeze(-1)


def ssm_recall(seed: int) -> Task:
    """A two-layer diagonal linear state-space model (LRU-style, real decays) regressing a
    nonlinear function of smoothed inputs 2, 10 and 20 steps back, batch 32, 6 epochs (372 steps).
    Train loss: the MSE to the noisy targets at steps 24–47 of each sequence (the noise alone costs
    0.09). Test metric: the same on the test sequences."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_mse, lambda out: out[:, _RECALL_FROM:])

    return _array_task("ssm_recall", _SSMRecall(), _recall_sequences(), seed, batch=32,
                       epochs=6, loss=loss, full_loss=full, metric=("test_mse", full))


_LORENZ_EVERY, _FORECAST_WINDOW, _FORECAST_AHEAD, _FORECAST_NOISE = 10, 32, 4, 0.3


def _lorenz_x(n: int, start, burn: int = 2000):
    """x(t) of the Lorenz system (σ = 10, ρ = 28, β = 8/3) by RK4 at dt = 0.01 from ``start``
    (x, y, z): after ``burn`` steps, n values 10 steps (0.1 time units) apart (float64)."""
    dt, (x, y, z), out = 0.01, start, []

    def f(x, y, z):
        return 10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z

    for i in range(burn + n * _LORENZ_EVERY):
        if i >= burn and (i - burn) % _LORENZ_EVERY == 0:
            out.append(x)
        k1 = f(x, y, z)
        k2 = f(x + dt / 2 * k1[0], y + dt / 2 * k1[1], z + dt / 2 * k1[2])
        k3 = f(x + dt / 2 * k2[0], y + dt / 2 * k2[1], z + dt / 2 * k2[2])
        k4 = f(x + dt * k3[0], y + dt * k3[1], z + dt * k3[2])
        x += dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        y += dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        z += dt / 6 * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
    return torch.tensor(out, dtype=torch.float64)


def _forecast_windows(series, clean):
    """Every window of 32 consecutive observations (n, 1, 32, float32) and the next 4 as targets,
    noisy and noise-free (n, 4, 2, float64)."""
    n = len(series) - _FORECAST_WINDOW - _FORECAST_AHEAD + 1
    idx = torch.arange(n)[:, None] + torch.arange(_FORECAST_WINDOW + _FORECAST_AHEAD)[None]
    ahead = idx[:, _FORECAST_WINDOW:]
    return (series[idx[:, :_FORECAST_WINDOW]].float()[:, None],
            torch.stack([series[ahead], clean[ahead]], -1))


@functools.lru_cache(maxsize=1)
def _lorenz_windows():
    """The Lorenz x coordinate from a start drawn near (0, 0, 25) (one fixed seed), 5000 values 0.1
    time units apart, standardised (by their own mean and standard deviation) and observed with
    N(0, 0.3²) noise (the noise alone costs 0.09). Windows of 32 observations, the next 4 (0.1 to
    0.4 time units ahead) the targets: the 3965 training windows from the first 4000 values, the
    965 test windows from the last 1000 (no value shared). X (n, 1, 32), the noisy observations
    rounded to float32; y (n, 4, 2, float64): the noisy next values and the noise-free ones."""
    g = torch.Generator().manual_seed(2049)
    start = torch.randn(3, generator=g, dtype=torch.float64) + torch.tensor([0.0, 0.0, 25.0])
    clean = _lorenz_x(5000, start.tolist())
    clean = (clean - clean.mean()) / clean.std()
    noisy = clean + _FORECAST_NOISE * torch.randn(5000, generator=g, dtype=torch.float64)
    noisy = noisy.float().double()  # as stored: the targets are the inputs' values to come
    Xtr, ytr = _forecast_windows(noisy[:4000], clean[:4000])
    Xte, yte = _forecast_windows(noisy[4000:], clean[4000:])
    return Xtr, ytr, Xte, yte


class _GatedBlock(nn.Module):
    """A residual block: a causal dilated convolution (kernel 3, the input padded on the left by
    2·dilation zeros: tap k reads the step (2 − k)·dilation back) to 2C channels a and b,
    tanh(a)·σ(b), a 1×1 convolution back to C, added to the block's input."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.pad = 2 * dilation
        self.conv = nn.Conv1d(channels, 2 * channels, 3, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, z):
        a, b = self.conv(F.pad(z, (self.pad, 0))).chunk(2, 1)
        return z + self.mix(torch.tanh(a) * torch.sigmoid(b))


class _TCN(nn.Module):
    """A 1×1 convolution 1 → 16 channels, four gated residual blocks at dilations 1, 2, 4 and 8
    (the receptive field 31 steps), ReLU, a 1×1 convolution to the 4 horizons. ``sequence`` gives
    the forecast made at every step of the window (n, 4, 32), forward the one made at its last
    step (n, 4)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.inp = nn.Conv1d(1, channels, 1)
        self.blocks = nn.Sequential(*[_GatedBlock(channels, d) for d in (1, 2, 4, 8)])
        self.head = nn.Conv1d(channels, _FORECAST_AHEAD, 1)

    def sequence(self, x):
        return self.head(F.relu(self.blocks(self.inp(x))))

    def forward(self, x):
        return self.sequence(x)[..., -1]


def tcn_forecast(seed: int) -> Task:
    """A dilated causal convolutional net (WaveNet-like gated residual blocks) forecasting the next
    four values of a noisy Lorenz coordinate from the last 32, batch 32, 3 epochs (369 steps).
    Train loss: the MSE to the noisy next values, the mean over the four horizons (the noise alone
    costs 0.09). Test metric: the same on the test windows."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_mse)

    return _array_task("tcn_forecast", _TCN(), _lorenz_windows(), seed, batch=32,
                       epochs=3, loss=loss, full_loss=full, metric=("test_mse", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 30: two more kinds of model not in the selection (a neural ODE: a tanh MLP
# vector field in a lifted 8-d state integrated by eight hand-written RK4 steps, classifying two
# interleaved spiral arms that fill the disk; attention-based multiple-instance learning, Ilse et
# al.'s gated attention pooling over bags of noisy digit images, a bag positive iff it holds a 9),
# each with 10 % of its labels flipped (the flips alone cost 0.325). Budgets fixed from plain runs
# at seed 0 before any QLAB run. node_spiral, 6 epochs: Adam 0.424 (lr 0.01), SGD 0.440 (lr 1),
# heavy ball 0.468 (lr 0.1; lr 1 diverges), from 0.844; at 3 epochs 0.504 (lr 0.1), 0.542 and
# 0.542, at 12 epochs 0.387 (lr 0.01), 0.445 and 0.405. mil_bags, 2 epochs: Adam 0.438 (lr 0.01),
# SGD 0.511 (lr 0.1), heavy ball 0.514 (lr 0.01; lr 1 diverges), from 0.697; at 1 epoch 0.470,
# 0.547 (lr 1) and 0.507 (lr 0.1), at 4 epochs 0.391, 0.487 and 0.422 (lr 0.1). Spirals with a
# gap between the arms (1–1.5 turns, point noise 0.05–0.15) either sat near 0.66 for the whole
# budget or fell in one cliff to their floor (Adam within 0.03 of it by 3 epochs); arms that meet
# keep a boundary to sharpen. Bags of noise-free digits came within 0.04 of their floor (Adam, one
# epoch of 2000 bags) and fell below it by 12 (0.284: flipped labels memorised): hence N(0, 1) pixel
# noise and 6000 bags seen twice. One plain run takes 1.1–1.2 s (node_spiral) and 0.2–0.3 s
# (mil_bags) on one thread here.
# ---------------------------------------------------------------------------------------------
_SPIRAL_TURNS, _SPIRAL_FLIP = 0.875, 0.1
_ODE_DIM, _ODE_STEPS = 8, 8


@functools.lru_cache(maxsize=1)
def _spirals():
    """Two interleaved spiral arms filling the disk of radius 2: points uniform in it (r = 2√u, θ
    uniform), the class c = 1 iff sin(θ − 0.875π r) > 0 (each arm turns 0.875 times from the centre
    to the rim, the arms meeting along two spiral curves, no gap between them), each label flipped
    with probability 0.1 (the flips alone cost 0.325). One fixed seed, 2000 training and 500 test
    points. X (n, 2, float32); y (n, 2, long): the noisy label and the class c."""
    g = torch.Generator().manual_seed(2050)
    n = 2500
    r = 2 * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    c = (torch.sin(theta - math.pi * _SPIRAL_TURNS * r) > 0).long()
    X = r[:, None] * torch.stack([theta.cos(), theta.sin()], -1)
    flip = (torch.rand(n, generator=g) < _SPIRAL_FLIP).long()
    y = torch.stack([c ^ flip, c], -1)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:]


class _NeuralODE(nn.Module):
    """A neural ODE: the point lifted linearly to h(0) ∈ R⁸, dh/dt = f(h) with f an autonomous
    8-32-8 tanh MLP, integrated over t ∈ [0, 1] by eight explicit RK4 steps (dt = 1/8) written out,
    then a linear readout of h(1) to the two classes' logits."""

    def __init__(self):
        super().__init__()
        self.lift = nn.Linear(2, _ODE_DIM)
        self.field = nn.Sequential(nn.Linear(_ODE_DIM, 32), nn.Tanh(), nn.Linear(32, _ODE_DIM))
        self.readout = nn.Linear(_ODE_DIM, 2)

    def trajectory(self, x):
        """h at t = 0, 1/8, …, 1 (n, 9, 8)."""
        h, dt, hs = self.lift(x), 1.0 / _ODE_STEPS, []
        hs.append(h)
        for _ in range(_ODE_STEPS):
            k1 = self.field(h)
            k2 = self.field(h + dt / 2 * k1)
            k3 = self.field(h + dt / 2 * k2)
            k4 = self.field(h + dt * k3)
            h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            hs.append(h)
        return torch.stack(hs, 1)

    def forward(self, x):
        return self.readout(self.trajectory(x)[:, -1])


def _noisy_ce(logits, y):
    """Cross-entropy to the noisy labels y[:, 0] (y[:, 1], the true classes, is not used)."""
    return F.cross_entropy(logits, y[:, 0])


@torch.no_grad()
def _noisy_acc(model, X, y):
    """Accuracy against the noisy labels y[:, 0]."""
    return float((model(X).argmax(-1) == y[:, 0]).float().mean())


def node_spiral(seed: int) -> Task:
    """A neural ODE (eight hand-written RK4 steps of a tanh MLP field in a lifted 8-d state)
    classifying two interleaved spiral arms with 10 % flipped labels, batch 32, 6 epochs
    (372 steps). Train loss: the cross-entropy to the noisy labels. Test metric: the accuracy
    against the noisy test labels."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_ce)

    return _array_task("node_spiral", _NeuralODE(), _spirals(), seed, batch=32,
                       epochs=6, loss=loss, full_loss=full,
                       metric=("test_acc", _noisy_acc))


_BAG_SIZE, _BAG_TARGET, _BAG_NOISE, _BAG_FLIP = 12, 9, 1.0, 0.1


def _bags_of(X, y, n, g):
    """n bags of 12 of the images X (labels y), drawn with replacement: a positive bag (a fair coin)
    holds 1–3 images of a 9 (uniform) and the rest other digits, a negative bag other digits only,
    the order within the bag random; N(0, 1) noise added to every pixel of every instance. The bags
    (n, 12, 64) and their labels (n, float64)."""
    nines, others = (y == _BAG_TARGET).nonzero()[:, 0], (y != _BAG_TARGET).nonzero()[:, 0]
    label = (torch.rand(n, generator=g) < 0.5).double()
    count = torch.randint(1, 4, (n,), generator=g) * label.long()
    pick_nine = nines[torch.randint(len(nines), (n, _BAG_SIZE), generator=g)]
    pick_other = others[torch.randint(len(others), (n, _BAG_SIZE), generator=g)]
    idx = torch.where(torch.arange(_BAG_SIZE)[None] < count[:, None], pick_nine, pick_other)
    order = torch.rand(n, _BAG_SIZE, generator=g).argsort(-1)
    bags = X[idx.gather(1, order)]
    return bags + _BAG_NOISE * torch.randn(bags.shape, generator=g), label


@functools.lru_cache(maxsize=1)
def _digit_bags():
    """Multiple-instance bags of digits: the images of the fixed digits split, each pixel less its
    training mean over its training standard deviation (floored at 0.1: a few border pixels are
    (nearly) always blank), in noisy bags of 12 (``_bags_of``), training bags from the 1200
    training images, test bags from the 597 test images; a bag is positive iff it holds a 9, and
    each label is flipped with probability 0.1. One fixed seed, 6000 training and 500 test bags.
    X (n, 12, 64, float32); y (n, 2, float64): the noisy label and the true one."""
    Xtr, ytr, Xte, yte = _digits()
    mu, sd = Xtr.mean(0), Xtr.std(0).clamp_min(0.1)
    g = torch.Generator().manual_seed(2051)
    out = []
    for X, y, n in ((Xtr, ytr, 6000), (Xte, yte, 500)):
        bags, label = _bags_of((X - mu) / sd, y, n, g)
        flip = (torch.rand(n, generator=g) < _BAG_FLIP).double()
        out += [bags, torch.stack([(label - flip).abs(), label], -1)]
    return tuple(out)


class _GatedAttentionMIL(nn.Module):
    """Attention-based multiple-instance learning (Ilse et al. 2018, gated attention): each
    instance embedded by a 64-32 ReLU layer, h_k; attention weights a = softmax_k(wᵀ(tanh(V h_k) ⊙
    σ(U h_k))) over the bag's instances (V, U: 16 × 32, no bias; w ∈ R¹⁶); the bag z = Σ_k a_k h_k;
    a linear head to one logit. (n, 12, 64) in, (n,) out."""

    def __init__(self, d_in: int = 64, hidden: int = 32, att: int = 16):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU())
        self.V = nn.Linear(hidden, att, bias=False)
        self.U = nn.Linear(hidden, att, bias=False)
        self.w = nn.Linear(att, 1, bias=False)
        self.head = nn.Linear(hidden, 1)

    def attention(self, h):
        """The weights over each bag's instances (n, 12) of the embeddings h (n, 12, 32)."""
        gate = torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))
        return torch.softmax(self.w(gate).squeeze(-1), -1)

    def forward(self, x):
        h = self.embed(x)
        z = (self.attention(h)[..., None] * h).sum(1)
        return self.head(z).squeeze(-1)


def _noisy_bce(logits, y):
    """Binary cross-entropy (with logits) to the noisy bag labels y[:, 0] (y[:, 1] not used)."""
    return F.binary_cross_entropy_with_logits(logits, y[:, 0].to(logits.dtype))


@torch.no_grad()
def _noisy_bin_acc(model, X, y):
    """Accuracy of the sign of the logit against the noisy labels y[:, 0]."""
    return float(((model(X) > 0).double() == y[:, 0]).double().mean())


def mil_bags(seed: int) -> Task:
    """Gated-attention multiple-instance learning on bags of 12 digits, positive iff a 9 is in the
    bag, 10 % of bag labels flipped, batch 32, 2 epochs (374 steps). Train loss: the
    binary cross-entropy to the noisy bag labels. Test metric: the accuracy against the noisy test
    labels."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_bce)

    return _array_task("mil_bags", _GatedAttentionMIL(), _digit_bags(), seed, batch=32,
                       epochs=2, loss=loss, full_loss=full,
                       metric=("test_acc", _noisy_bin_acc))


# ---------------------------------------------------------------------------------------------
# Held out of round 31: two more kinds of model not in the selection (a linear-chain conditional
# random field tagging sequences of a hidden Markov model, its negative log-likelihood by the
# forward algorithm written out, the test tags by a hand-written Viterbi decoder; a neural additive
# model, one small MLP per feature, on a regression that is a sum of steps, bumps and periodic
# pieces of single features), each with noise that no method can fit: the tags are ambiguous given
# the tokens (the HMM's own posterior costs 0.566 nats a token), the regression targets carry
# N(0, 0.3²) noise (0.094 on the training points). Budgets fixed from plain runs at seed 0 before
# any QLAB run. crf_tagger, 1 epoch: Adam 0.661 (lr 0.01), heavy ball 0.673 (lr 1), SGD 0.761 (lr
# 1), from 2.114 (seed 1: 0.659, 0.705, 0.769); at 2 epochs 0.600, 0.639 and 0.680, at 4 epochs
# 0.579, 0.626 and 0.633. One epoch, because at two Adam's best run is 0.034 above the floor, less
# than the bar's 10 %, which would then pass any run that gets near the floor at all. A first HMM
# of 6 tags and 24 tokens (and one of 8 and 40, Zipf-like or not) was fitted to within 0.01 of its
# floor by Adam, heavy ball and SGD alike in 6 epochs of 2000 sequences: hence 200 tokens, many of
# them rare, and 6000 sequences seen once. nam_additive, 6 epochs: Adam 0.321 (lr 0.01), SGD
# 0.525 (lr 0.1), heavy ball 0.560 (lr 0.01; lr 1 diverges for both), from 1.435; at 3 epochs
# 0.453, 0.594 and 0.565, at 12 epochs 0.173, 0.441 and 0.424. One plain run takes 1.4–2.1 s
# (crf_tagger, at 2 epochs) and 0.4–0.9 s (nam_additive) on one thread here, beside another job.
# ---------------------------------------------------------------------------------------------
_TAGS, _VOCAB, _TAG_LEN = 8, 200, 24


def _draw(p, g):
    """One draw from each categorical distribution p (…, K) by the inverse CDF of a uniform."""
    u = torch.rand(p.shape[:-1], generator=g, dtype=torch.float64)
    return (p.cumsum(-1) < u[..., None]).sum(-1).clamp_max(p.shape[-1] - 1)


@functools.lru_cache(maxsize=1)
def _hmm_sequences():
    """Tagged sequences from a hidden Markov model with 8 tags and 200 tokens: the start uniform,
    the transitions A = softmax_row(2.5 G), the emissions B = softmax_row(2 H − log(v + 1)) (v = 0
    … 199: Zipf-like token frequencies, many rare tokens), G (8 × 8) and H (8 × 200) standard normal;
    tags y_0 ~ uniform, y_t ~ A[y_{t−1}], each token x_t ~ B[y_t] (by the inverse CDF of one uniform
    each). The tokens leave the tags ambiguous: the HMM's own posterior costs H(y | x) = 0.566 nats
    a token on the training sequences (0.574 on the test ones), the floor of the loss below, and its
    Viterbi path gets 74 % of the tags (61 % from each token's emission alone). One fixed seed, 6000
    training and 500 test sequences of 24 tokens. X (n, 24, float32): the token ids; y (n, 24,
    long): the tags; and (π, A, B), float64."""
    g = torch.Generator().manual_seed(2052)
    A = torch.softmax(2.5 * torch.randn(_TAGS, _TAGS, generator=g, dtype=torch.float64), -1)
    zipf = -torch.arange(1, _VOCAB + 1, dtype=torch.float64).log()
    B = torch.softmax(2.0 * torch.randn(_TAGS, _VOCAB, generator=g, dtype=torch.float64) + zipf, -1)
    pi = torch.full((_TAGS,), 1.0 / _TAGS, dtype=torch.float64)
    n = 6500
    y = torch.empty(n, _TAG_LEN, dtype=torch.long)
    y[:, 0] = _draw(pi.expand(n, _TAGS), g)
    for t in range(1, _TAG_LEN):
        y[:, t] = _draw(A[y[:, t - 1]], g)
    X = _draw(B[y], g).float()
    return X[:6000], y[:6000], X[6000:], y[6000:], (pi, A, B)


class _CRFTagger(nn.Module):
    """A linear-chain CRF tagger: emission scores e_t ∈ R⁸ from a token embedding (200 → 16) read
    by a 1-D convolution over a window of five tokens (16 → 32 channels, zero padding 2), ReLU, and
    a linear map to the 8 tags; a learned transition matrix T (8 × 8, T[i, j] the score of tag j
    after tag i) and start and end scores s, f ∈ R⁸ (all three started at 0). ``forward`` gives
    the edge potentials ψ (n, 24, 8, 8): ψ_0[i, j] = s_j + e_0[j] (for every i), ψ_t[i, j] =
    T[i, j] + e_t[j], f_j added at the last step; a tag path's score is ψ_0[·, y_0] + Σ_{t≥1}
    ψ_t[y_{t−1}, y_t]."""

    def __init__(self, embed: int = 16, channels: int = 32):
        super().__init__()
        self.embed = nn.Embedding(_VOCAB, embed)
        self.conv = nn.Conv1d(embed, channels, 5, padding=2)
        self.out = nn.Linear(channels, _TAGS)
        self.trans = nn.Parameter(torch.zeros(_TAGS, _TAGS))
        self.start = nn.Parameter(torch.zeros(_TAGS))
        self.end = nn.Parameter(torch.zeros(_TAGS))

    def emissions(self, x):
        """(n, 24) token ids (any dtype) → (n, 24, 8) emission scores."""
        h = self.conv(self.embed(x.long()).transpose(1, 2))
        return self.out(F.relu(h).transpose(1, 2))

    def forward(self, x):
        e = self.emissions(x)
        T = e.shape[1]
        psi = self.trans.to(e.dtype) + e[:, :, None, :]
        first = (self.start.to(e.dtype) + e[:, 0])[:, None, :].expand(-1, _TAGS, -1)
        last = torch.zeros(T, 1, _TAGS, dtype=e.dtype, device=e.device)
        last[-1] = self.end.to(e.dtype)
        return torch.cat([first[:, None], psi[:, 1:]], 1) + last


def _crf_log_partition(psi):
    """log Z of each sequence by the forward algorithm: α_0 = ψ_0[0, ·], α_t[j] = log Σ_i
    exp(α_{t−1}[i] + ψ_t[i, j]), log Z = log Σ_j exp(α_{T−1}[j]). (n, T, K, K) → (n,)."""
    alpha = psi[:, 0, 0]
    for t in range(1, psi.shape[1]):
        alpha = torch.logsumexp(alpha[:, :, None] + psi[:, t], 1)
    return torch.logsumexp(alpha, -1)


def _crf_path_score(psi, y):
    """The score of the tag paths y (n, T): ψ_0[0, y_0] + Σ_{t≥1} ψ_t[y_{t−1}, y_t]. (n,)"""
    rows = torch.arange(len(y), device=y.device)
    score = psi[rows, 0, 0, y[:, 0]]
    for t in range(1, psi.shape[1]):
        score = score + psi[rows, t, y[:, t - 1], y[:, t]]
    return score


def _crf_nll(psi, y):
    """The CRF's negative log-likelihood of the true tags, log Z − score(y), of each sequence over
    its length (nats a token), the mean over the sequences."""
    return ((_crf_log_partition(psi) - _crf_path_score(psi, y)) / psi.shape[1]).mean()


@torch.no_grad()
def _viterbi(psi):
    """The highest-scoring tag path of each sequence, by the max-product recursion δ_0 = ψ_0[0, ·],
    δ_t[j] = max_i δ_{t−1}[i] + ψ_t[i, j] with back-pointers, traced back from argmax δ_{T−1}
    (ties to the lowest tag). (n, T, K, K) → (n, T) long."""
    delta, back = psi[:, 0, 0], []
    for t in range(1, psi.shape[1]):
        best, arg = (delta[:, :, None] + psi[:, t]).max(1)
        delta = best
        back.append(arg)
    tag = delta.argmax(-1)
    path = [tag]
    for arg in reversed(back):
        tag = arg.gather(1, tag[:, None])[:, 0]
        path.append(tag)
    return torch.stack(path[::-1], 1)


@torch.no_grad()
def _viterbi_token_acc(model, X, y):
    """The fraction of the tags that the Viterbi path of the model's potentials gets right."""
    return float((_viterbi(model(X)) == y).double().mean())


def crf_tagger(seed: int) -> Task:
    """A linear-chain CRF tagger (convolutional emissions over a five-token window, learned
    transition, start and end scores) on sequences of an HMM, batch 32, 1 epoch (187 steps).
    Train loss: the CRF negative log-likelihood of the true tags (forward algorithm) per token,
    the mean over the sequences (the HMM's own posterior costs 0.566). Test metric: the token
    accuracy of the Viterbi path on the test sequences."""
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte, _ = _hmm_sequences()

    loss, full = _loss_and_full(_crf_nll)

    return _array_task("crf_tagger", _CRFTagger(), (Xtr, ytr, Xte, yte), seed, batch=32,
                       epochs=1, loss=loss, full_loss=full,
                       metric=("test_token_acc", _viterbi_token_acc))


_NAM_FEATURES, _NAM_NOISE = 8, 0.3


def _shape_functions(x):
    """The eight shape functions of the additive target at x (n, 8, float64), each of its own
    column: a step 1[x > 0.2], a bump exp(−(x − 0.3)²/(2·0.15²)), sin(3πx), x², |x + 0.4|, 0 (a
    feature that does not matter), sin(4πx) for x > 0 and 0 below, and x. (n, 8)"""
    x1, x2, x3, x4, x5, x6, x7, x8 = x.unbind(-1)
    return torch.stack([(x1 > 0.2).double(), torch.exp(-(x2 - 0.3) ** 2 / (2 * 0.15 ** 2)),
                        torch.sin(3 * math.pi * x3), x4 ** 2, (x5 + 0.4).abs(), torch.zeros_like(x6),
                        torch.where(x7 > 0, torch.sin(4 * math.pi * x7), 0.0), x8], -1)


@functools.lru_cache(maxsize=1)
def _additive_data():
    """A regression whose truth is a sum of 1-D shape functions: x uniform on [−1, 1]⁸ (rounded to
    float32), g(x) = c·(Σ_j f_j(x_j) − m), the f_j of ``_shape_functions``, m and c centring g and
    scaling it to unit standard deviation over all the points; the target g plus N(0, 0.3²) noise
    (the noise alone costs 0.09). One fixed seed, 2000 training and 500 test points. X (n, 8,
    float32); y (n, 2, float64): the noisy target and g."""
    g = torch.Generator().manual_seed(2053)
    n = 2500
    X = (2 * torch.rand(n, _NAM_FEATURES, generator=g, dtype=torch.float64) - 1).float()
    raw = _shape_functions(X.double()).sum(-1)
    clean = (raw - raw.mean()) / raw.std()
    noisy = clean + _NAM_NOISE * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.stack([noisy, clean], -1)
    return X[:2000], y[:2000], X[2000:], y[2000:]


class _AdditiveModel(nn.Module):
    """A neural additive model (Agarwal et al. 2021): one 1-32-32-1 ReLU MLP per feature (its last
    layer without bias), the eight outputs summed with a learned bias (started at 0). ``features``
    gives each feature's contribution (n, 8), forward their sum plus the bias (n,)."""

    def __init__(self, features: int = _NAM_FEATURES, hidden: int = 32):
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1, bias=False)) for _ in range(features))
        self.bias = nn.Parameter(torch.zeros(()))

    def features(self, x):
        return torch.cat([net(x[:, j:j + 1]) for j, net in enumerate(self.nets)], -1)

    def forward(self, x):
        return self.features(x).sum(-1) + self.bias


def nam_additive(seed: int) -> Task:
    """A neural additive model (one small ReLU MLP per feature, the outputs summed) on a noisy
    regression whose truth is a sum of steps, bumps and periodic pieces of single features,
    batch 32, 6 epochs (372 steps). Train loss: the MSE to the noisy targets (the noise
    alone costs 0.09). Test metric: the same on the test points."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_mse)

    return _array_task("nam_additive", _AdditiveModel(), _additive_data(), seed, batch=32,
                       epochs=6, loss=loss, full_loss=full, metric=("test_mse", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 32: two more kinds of model not in the selection (an ensemble of soft
# oblivious decision trees, NODE-like, on a tabular classification whose truth is a small decision
# tree; DistMult knowledge-graph embeddings scoring every entity as the tail, 1-N, on a graph whose
# tails are drawn from a known DistMult model), each with noise that no method can fit: a fifth of
# the labels are drawn at random (the noise alone costs 0.588 nats, 0.564 on the training labels),
# the tails are drawn from p(t | h, r) (its entropy, 2.208 nats on the training pairs, the oracle's
# cross-entropy 2.184 on the drawn tails). Budgets fixed from plain runs at seed 0 before any QLAB
# run. soft_trees, 4 epochs: Adam 0.716 (lr 0.01), heavy ball 0.885 (lr 0.1), SGD 0.891 (lr 1),
# from 1.451; at 2 epochs 0.732 (lr 0.1), 0.908 (0.1) and 0.958 (1), at 8 epochs 0.632 (0.01),
# 0.790 (0.1) and 0.823 (1). Four epochs: Adam's best run ends 27 % above the training labels'
# floor (12 % at eight). The trees' outputs are summed, not averaged: averaged, SGD and heavy ball
# barely moved (1.25 and 1.28 after 6 epochs of 2000 points). kg_distmult, 2 epochs: Adam 2.761
# (lr 0.01), SGD 3.401 (lr 1), heavy ball 3.460 (lr 0.1), from 5.505; at 1 epoch 3.290 (lr 0.1),
# 4.469 (1) and 4.608 (0.1), at 4 epochs 2.252 (0.01), 2.698 (1) and 2.723 (0.1). Two epochs
# (Adam's best run 26 % above the oracle's 2.184), because at four it is 0.07 (3 %) above it,
# less than the bar's 10 %. A first graph (300 entities, 8 relations, τ from 0.15 to 2, floor
# 3.98, 6000 triples) was fitted below its floor by Adam in 4 epochs, the tails of its 2400 (h, r)
# pairs memorised: hence fewer entities and relations, sharper relations and 7000 triples. One
# plain run takes 0.3 s (soft_trees) and 0.15 s (kg_distmult) on one thread here, beside another
# job.
# ---------------------------------------------------------------------------------------------
_TREE_FEATURES, _TREE_CLASSES, _TREE_NOISE = 12, 4, 0.2
_TREES, _TREE_DEPTH = 8, 3


def _tree_rule(x):
    """The true class of each point x (n, 12, float64) by a depth-3 decision tree on six of the
    twelve features: where x_0 > 0.25, class 0 if x_1 > −0.2, else 1 if x_2 > 0.3, else 2; where
    x_0 ≤ 0.25, class 3 if x_3 + x_4 > 0 (the one oblique split), else 1 if x_5 < −0.4, else 2.
    (n,) long"""
    high = torch.where(x[:, 1] > -0.2, 0, torch.where(x[:, 2] > 0.3, 1, 2))
    low = torch.where(x[:, 3] + x[:, 4] > 0, 3, torch.where(x[:, 5] < -0.4, 1, 2))
    return torch.where(x[:, 0] > 0.25, high, low)


def _tree_noise_floor():
    """The cross-entropy of the noisy labels under their own distribution p(label | x), 1 − 3ρ/4 =
    0.85 on the class and ρ/4 = 0.05 on each other one: H = −0.85 log 0.85 − 3·0.05 log 0.05."""
    hit, miss = 1 - _TREE_NOISE + _TREE_NOISE / _TREE_CLASSES, _TREE_NOISE / _TREE_CLASSES
    return -hit * math.log(hit) - (_TREE_CLASSES - 1) * miss * math.log(miss)


@functools.lru_cache(maxsize=1)
def _tree_table():
    """A tabular classification whose truth is a small decision tree: x uniform on [−1, 1]¹²
    (rounded to float32), the class c of ``_tree_rule`` (six features matter, six do not), the
    label c except with probability 0.2, where it is drawn uniformly from the four classes (so it
    differs from c with probability 0.15): p(label | x) is 0.85 on c and 0.05 on each other class,
    and the noise alone costs 0.588 nats (``_tree_noise_floor``; 0.564 on the training points' own
    labels, of which 14.2 % differ from c). One fixed seed, 3000 training and 500 test points.
    X (n, 12, float32); y (n, 2, long): the noisy label and the class c."""
    g = torch.Generator().manual_seed(2054)
    n = 3500
    X = (2 * torch.rand(n, _TREE_FEATURES, generator=g, dtype=torch.float64) - 1).float()
    c = _tree_rule(X.double())
    redraw = torch.rand(n, generator=g, dtype=torch.float64) < _TREE_NOISE
    label = torch.where(redraw, torch.randint(_TREE_CLASSES, (n,), generator=g), c)
    y = torch.stack([label, c], -1)
    return X[:3000], y[:3000], X[3000:], y[3000:]


class _SoftTrees(nn.Module):
    """An ensemble of soft oblivious decision trees (NODE, Popov et al. 2019, simplified): 8 trees
    of depth 3. At level d tree m reads a soft choice of one feature, f_md = Σ_j softmax(A_md)_j x_j
    (A_md ∈ R¹², started N(0, 1)), and goes right with probability s_md = σ(exp(κ_md)·(f_md −
    b_md)) (the threshold b_md started U(−0.5, 0.5), the log temperature κ_md at log 2), one split
    for the whole level (oblivious). Leaf l = (l_0 l_1 l_2) in binary, l_0 the first level's
    bit, is reached with probability p_ml = Π_d (s_md if l_d = 1 else 1 − s_md) and holds four
    class logits V_ml (started N(0, 0.3²)). The output, the logits (n, 4), is the sum over the
    trees of Σ_l p_ml V_ml. ``leaf_probs`` gives the p (n, 8 trees, 8 leaves)."""

    def __init__(self, trees: int = _TREES, depth: int = _TREE_DEPTH):
        super().__init__()
        self.select = nn.Parameter(torch.randn(trees, depth, _TREE_FEATURES))
        self.threshold = nn.Parameter(torch.rand(trees, depth) - 0.5)
        self.log_temp = nn.Parameter(torch.full((trees, depth), math.log(2.0)))
        self.leaves = nn.Parameter(0.3 * torch.randn(trees, 2 ** depth, _TREE_CLASSES))

    def leaf_probs(self, x):
        f = torch.einsum("nj,mdj->nmd", x, torch.softmax(self.select, -1))
        s = torch.sigmoid(self.log_temp.exp() * (f - self.threshold))
        p = torch.ones_like(s[:, :, :1])
        for d in range(s.shape[-1]):  # each level doubles the leaves, its bit l_d the lowest yet
            p = torch.stack([p * (1 - s[:, :, d:d + 1]), p * s[:, :, d:d + 1]], -1).flatten(2)
        return p

    def forward(self, x):
        return torch.einsum("nml,mlk->nk", self.leaf_probs(x), self.leaves)


def soft_trees(seed: int) -> Task:
    """An ensemble of eight soft oblivious decision trees of depth 3 (NODE-like: a softmax choice of
    the feature and a learned threshold and temperature at each level, class logits in the leaves)
    on a 12-feature, 4-class table whose truth is a small decision tree, a fifth of the labels
    drawn at random, batch 32, 4 epochs (372 steps). Train loss: the cross-entropy to the
    noisy labels (the noise alone costs 0.588). Test metric: the accuracy against the noisy test
    labels."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_ce)

    return _array_task("soft_trees", _SoftTrees(), _tree_table(), seed, batch=32,
                       epochs=4, loss=loss, full_loss=full,
                       metric=("test_acc", _noisy_acc))


_KG_ENTITIES, _KG_RELATIONS, _KG_TRUE_DIM, _KG_DIM = 200, 6, 8, 32
_KG_TEMPS = (0.06, 0.1, 0.15, 0.25, 0.4, 0.7)  # one per relation: near-functional to diffuse


@functools.lru_cache(maxsize=1)
def _knowledge_graph():
    """A knowledge graph whose tails are drawn from a known DistMult model: true entity vectors
    a_e ∈ R⁸ (200 entities) and relation vectors c_r ∈ R⁸ (6 relations), all standard normal;
    the true score S_r[h, t] = Σ_k a_h[k] c_r[k] a_t[k] / √8 and p(t | h, r) = softmax_t(S_r[h, t]
    / τ_r), τ_r = 0.06, 0.1, 0.15, 0.25, 0.4, 0.7 (from near-functional to diffuse: H(t | h, r)
    is 0.22, 0.97, 1.27, 2.22, 4.18 and 4.45 nats, each relation's mean over its training
    triples). Triples: h and r uniform, t ~ p(· | h, r) (by the inverse CDF of one uniform each).
    The floor: H(t | h, r) averages 2.208 nats over the training triples (the oracle, the true p
    as a model, costs 2.184 on their drawn tails); ranking the tails by the true scores gives a
    raw MRR of 0.587 on the test triples. One fixed seed, 7000 training and 1000 test triples.
    X (n, 2, float32): the head and relation ids; y (n, long): the tails; and P (6, 200, 200,
    float64), P[r, h] the true p(· | h, r)."""
    g = torch.Generator().manual_seed(2055)
    a = torch.randn(_KG_ENTITIES, _KG_TRUE_DIM, generator=g, dtype=torch.float64)
    c = torch.randn(_KG_RELATIONS, _KG_TRUE_DIM, generator=g, dtype=torch.float64)
    S = torch.einsum("hk,rk,tk->rht", a, c, a) / math.sqrt(_KG_TRUE_DIM)
    P = torch.softmax(S / torch.tensor(_KG_TEMPS, dtype=torch.float64)[:, None, None], -1)
    n = 8000
    h = torch.randint(_KG_ENTITIES, (n,), generator=g)
    r = torch.randint(_KG_RELATIONS, (n,), generator=g)
    t = _draw(P[r, h], g)
    X = torch.stack([h, r], -1).float()
    return X[:7000], t[:7000], X[7000:], t[7000:], P


class _DistMult(nn.Module):
    """DistMult (Yang et al. 2015) scoring every entity as the tail (1-N scoring): entity vectors
    E (200 × 32) and relation vectors W (6 × 32), all started N(0, 0.5²); score(h, r, t) = Σ_k
    E[h, k] W[r, k] E[t, k]. ``forward`` maps rows (h, r) (n, 2, any dtype) to the logits
    (E[h] ∘ W[r]) Eᵀ (n, 200)."""

    def __init__(self, dim: int = _KG_DIM):
        super().__init__()
        self.ent = nn.Parameter(0.5 * torch.randn(_KG_ENTITIES, dim))
        self.rel = nn.Parameter(0.5 * torch.randn(_KG_RELATIONS, dim))

    def forward(self, x):
        h, r = x[:, 0].long(), x[:, 1].long()
        return (self.ent[h] * self.rel[r]) @ self.ent.T


@torch.no_grad()
def _tail_mrr(model, X, y):
    """The mean reciprocal rank of the true tail among all 200 entities by the model's logits:
    raw (not filtered: another tail of the same (h, r) that scores higher counts against it),
    ties against it (the rank is the number of entities scoring at least as high as the true
    tail, itself included)."""
    logits = model(X)
    rank = (logits >= logits.gather(1, y[:, None])).sum(-1)
    return float((1 / rank.double()).mean())


def kg_distmult(seed: int) -> Task:
    """DistMult knowledge-graph embeddings (200 entities, 6 relations, 32 dimensions) scoring all
    200 entities as the tail of (h, r), on triples whose tails are drawn from a known DistMult
    model, batch 32, 2 epochs (436 steps). Train loss: the softmax cross-entropy of the
    true tail over all entities (the true distribution's own entropy, 2.208, is the floor). Test
    metric: the raw mean reciprocal rank of the true tail on the test triples."""
    torch.manual_seed(seed)

    return _array_task("kg_distmult", _DistMult(), _knowledge_graph()[:4], seed, batch=32,
                       epochs=2, metric=("test_mrr", _tail_mrr))


# ---------------------------------------------------------------------------------------------
# Held out of round 33: two more kinds of model not in the selection (low-rank adaptation, LoRA
# adapters of rank 4 on the hidden layers of a frozen "pretrained" tanh MLP whose weights are
# buffers, not parameters; a recurrent marked temporal point process, RMTPP, a GRU over the events
# with an exponential intensity between them, its exact log-likelihood by the closed-form integral),
# each with noise that no method can fit: the targets are the base changed by a known rank-4 Δ on
# each hidden layer plus N(0, 0.3²) noise (0.09, 0.091 on the training targets), the events are
# drawn from a known RMTPP with a smaller GRU (its own NLL, 1.161 nats an event on the training
# sequences, is the floor). Both models can represent their truth exactly, so that the budget, not
# the model, keeps a run off its floor. Budgets fixed from plain runs at seed 0 before any QLAB run.
# lora_adapt, 6 epochs: Adam 0.107 (lr 0.01), heavy ball 0.131 (lr 0.1), SGD 0.188 (lr 0.1; at lr 1
# all three end above the base's 0.667), from 0.667 (seed 1: 0.112, 0.131 and 0.180); at 3 epochs
# 0.154 (lr 0.01), 0.158 (0.1) and 0.214 (0.1), at 12 epochs 0.101 (0.01), 0.114 (0.1) and 0.156
# (0.1). Six epochs: Adam's best run ends 17 % above the training targets' noise (11 % at twelve).
# tpp_rmtpp, 6 epochs: Adam 1.365 (lr 0.01), heavy ball 1.450 (lr 0.1), SGD 1.746 (lr 0.1; lr 1
# diverges for both), from 2.90 (seed 1: 1.391, 1.445 and 1.733); at 3 epochs 1.445, 1.530 and
# 1.919, at 12 epochs 1.318, 1.384 and 1.624 (the same lrs). Six epochs: Adam's best run ends 18 %
# above the floor (14 % at twelve, where its test NLL, 1.358, parts from its train loss). A Hawkes
# process first (3 or 16 marks, exponential kernels, Ogata thinning) was no test: with fast, strong
# kernels the RMTPP's intensity, monotone in the time since the last event and decaying to 0, not to
# the baseline, held all three at 1.46–1.50 at 3 and 6 epochs alike, 12–15 % above the floor; with
# slower or sparser kernels Adam came within 5 % of it in 3–6 epochs: hence a teacher of the model's
# own form. One plain run takes 0.2–0.4 s (lora_adapt) and 2–2.5 s (tpp_rmtpp; 3–5 s two at a time)
# on one thread here, beside other jobs.
# ---------------------------------------------------------------------------------------------
_LORA_IN, _LORA_HIDDEN, _LORA_OUT, _LORA_RANK = 16, 64, 4, 4
_LORA_SCALE, _LORA_DELTA, _LORA_NOISE = 2.0, 0.5, 0.3  # scale α/r = 8/4; ‖Δ_l‖ = 0.5 ‖W_l‖


def _tanh_layers(x, layers):
    """h ← tanh(h Wᵀ + b) for each (W, b) of ``layers`` in turn, from h = x."""
    for W, b in layers:
        x = torch.tanh(x @ W.T + b)
    return x


@functools.lru_cache(maxsize=1)
def _lora_data():
    """A frozen "pretrained" network, a known low-rank change to it, and the changed network's
    noisy outputs, all from one fixed seed. The base: a 16-64-64-4 tanh MLP, W_1 (64 × 16) and W_2
    (64 × 64) N(0, 1.5²/fan_in), b_1, b_2 N(0, 0.1²), W_3 (4 × 64) N(0, 1/64). The change: Δ_l =
    U_l V_l (U_l: 64 × 4, V_l: 4 × fan_in, standard normal) scaled to ‖Δ_l‖_F = 0.5 ‖W_l‖_F, on
    the two hidden layers. x ~ N(0, I₁₆); g(x) the changed network's output, W_3 and b_3 rescaled
    and shifted so that each output of g is centred over all the points and the four together
    have unit standard deviation (W_3 and b_3 are the base's too); the targets g plus N(0, 0.3²)
    noise (the noise alone costs 0.09, 0.091 on the training targets, 0.088 on the test ones).
    The base and x rounded to float32 (held in float64), the Δ_l not (rank 4 exactly). 2000
    training and 500 test points. X (n, 16, float32); y (n, 4, 2, float64): the noisy targets and
    g; the base ((W_1, b_1), (W_2, b_2), (W_3, b_3)) and the changes (Δ_1, Δ_2), float64."""
    g = torch.Generator().manual_seed(2056)

    def normal(*shape, sd=1.0):
        return sd * torch.randn(*shape, generator=g, dtype=torch.float64)

    hidden = [(normal(_LORA_HIDDEN, d, sd=1.5 / math.sqrt(d)).float().double(),
               normal(_LORA_HIDDEN, sd=0.1).float().double()) for d in (_LORA_IN, _LORA_HIDDEN)]
    W3 = normal(_LORA_OUT, _LORA_HIDDEN, sd=1 / math.sqrt(_LORA_HIDDEN))
    deltas = []
    for W, _ in hidden:
        D = normal(_LORA_HIDDEN, _LORA_RANK) @ normal(_LORA_RANK, W.shape[1])
        deltas.append(_LORA_DELTA * D * W.norm() / D.norm())  # not rounded: rank 4 exactly
    n = 2500
    X = normal(n, _LORA_IN).float().double()
    h = _tanh_layers(X, [(W + D, b) for (W, b), D in zip(hidden, deltas)])
    raw = h @ W3.T
    sd = (raw - raw.mean(0)).std()  # one scale for the four outputs, each centred
    W3, b3 = (W3 / sd).float().double(), (-raw.mean(0) / sd).float().double()
    clean = h @ W3.T + b3
    y = torch.stack([clean + _LORA_NOISE * normal(n, _LORA_OUT), clean], -1)
    base = (*hidden, (W3, b3))
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:], base, tuple(deltas)


class _LoRAMLP(nn.Module):
    """The frozen base of ``_lora_data`` (its weights buffers, not parameters: they never train)
    with a LoRA adapter (Hu et al. 2021) on each hidden layer: h ← tanh(W h + b + s·B A h), A (4 ×
    fan_in) started U(±1/√fan_in) as nn.Linear's weight, B (64 × 4) started at 0, so that the
    model starts at the base; s = α/r = 2. Only the A_l and B_l are parameters (832 numbers)."""

    def __init__(self):
        super().__init__()
        *hidden, (W3, b3) = _lora_data()[4]
        for i, (W, b) in enumerate(hidden, 1):
            self.register_buffer(f"W{i}", W.float())
            self.register_buffer(f"b{i}", b.float())
            bound = 1 / math.sqrt(W.shape[1])
            self.register_parameter(f"A{i}", nn.Parameter(
                torch.empty(_LORA_RANK, W.shape[1]).uniform_(-bound, bound)))
            self.register_parameter(f"B{i}", nn.Parameter(torch.zeros(W.shape[0], _LORA_RANK)))
        self.register_buffer("W3", W3.float())
        self.register_buffer("b3", b3.float())

    def forward(self, x):
        for W, b, A, B in ((self.W1, self.b1, self.A1, self.B1),
                           (self.W2, self.b2, self.A2, self.B2)):
            x = torch.tanh(x @ W.T + b + _LORA_SCALE * (x @ A.T) @ B.T)
        return x @ self.W3.T + self.b3


def lora_adapt(seed: int) -> Task:
    """LoRA: rank-4 adapters on the two hidden layers of a frozen 16-64-64-4 tanh MLP, fitting the
    same network changed by a known rank-4 Δ on each of those layers, N(0, 0.3²) noise on the
    targets, batch 32, 6 epochs (372 steps). Train loss: the MSE to the noisy targets (the noise
    alone costs 0.09). Test metric: the same on the test points."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_mse)

    return _array_task("lora_adapt", _LoRAMLP(), _lora_data()[:4], seed, batch=32,
                       epochs=6, loss=loss, full_loss=full, metric=("test_mse", full))


_TPP_MARKS, _TPP_EVENTS, _TPP_TEACHER, _TPP_DRIFT = 8, 32, 16, 0.5  # the teacher: 16 units, w


def _gru_cell(x, h, Wi, Wh, bi, bh):
    """One step of torch's GRU (nn.GRU's gate order r, z, n): r = σ(W_ir x + b_ir + W_hr h + b_hr),
    z likewise, n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h."""
    ir, iz, i_n = (x @ Wi.T + bi).chunk(3, -1)
    hr, hz, h_n = (h @ Wh.T + bh).chunk(3, -1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def _rmtpp_log_lik(a, w, logits, tau, mark):
    """log f(τ) + log p(m) of each event under an RMTPP head: the intensity e^{a + w s} at time s
    after the previous event, so log f(τ) = a + wτ − e^a (e^{wτ} − 1)/w (the closed-form integral);
    the mark's log-softmax. w = 0 exactly reads as 1e-12 (the limit, e^a τ, to float precision)."""
    w = torch.where(w == 0, torch.full_like(w, 1e-12), w)
    log_time = a + w * tau - a.exp() * torch.expm1(w * tau) / w
    return log_time + F.log_softmax(logits, -1).gather(-1, mark[..., None])[..., 0]


def _tpp_teacher_heads(teacher, h):
    """The teacher's log-intensity a = v·h at the last event and its mark logits U h."""
    return h @ teacher["v"], h @ teacher["U"].T


def _tpp_teacher_input(tau, mark):
    """The teacher's GRU input at an event: the mark's one-hot, τ and log τ. (n, 10)"""
    return torch.cat([F.one_hot(mark, _TPP_MARKS).double(), tau[:, None], tau.log()[:, None]], -1)


def _tpp_teacher_nll(teacher, y):
    """The teacher's negative log-likelihood per event of each sequence y (n, L, 2: the gaps and
    marks, float64), its GRU run over the sequence's own events. (n,)"""
    tau, mark = y[..., 0], y[..., 1].long()
    h = torch.zeros(len(y), _TPP_TEACHER, dtype=torch.float64)
    total = torch.zeros(len(y), dtype=torch.float64)
    w = torch.tensor(_TPP_DRIFT, dtype=torch.float64)
    for j in range(y.shape[1]):
        a, logits = _tpp_teacher_heads(teacher, h)
        total = total - _rmtpp_log_lik(a, w, logits, tau[:, j], mark[:, j])
        h = _gru_cell(_tpp_teacher_input(tau[:, j], mark[:, j]), h, *teacher["gru"])
    return total / y.shape[1]


@functools.lru_cache(maxsize=1)
def _tpp_sequences():
    """Marked event sequences drawn from a known RMTPP, the teacher: a GRU of 16 units
    (``_gru_cell``) reading at each event the mark's one-hot (8 marks), its gap τ and log τ, its
    weights W_i (48 × 10) N(0, 2²/10) and W_h (48 × 16) N(0, 3²/16) (a strong recurrence: the state
    carries several events back), its biases N(0, 0.1²). From the state h before each event (h = 0
    at the start), the intensity e^{a + w s} at time s after the last event, a = v·h (v N(0,
    2.5²/16)), w = 0.5 (a hazard that grows while it waits, so that every gap is finite), and the
    mark's probabilities softmax(U h) (U N(0, 8²/16)): the gap drawn by inverting the compensator,
    τ = log(1 + w e·e^{−a})/w for e ~ Exp(1), rounded to float32, the mark drawn apart from it (by
    the inverse CDF of a uniform). The floor is the teacher's own NLL: 1.161 nats an event on the
    training sequences (0.483 for the gaps, 0.678 for the marks; 1.167 on the test ones), against
    2.348 for a Poisson process with the marks' frequencies (0.26, 0.05, 0.01, 0.09, 0.04, 0.28,
    0.26, 0.01; the mean gap 0.75). One fixed seed, 2000 training and 500 test sequences of 32
    events. X (n, 32, 2, float32): each event's gap and mark; y: the same in float64; and the
    teacher's weights."""
    g = torch.Generator().manual_seed(2058)
    H, K, n, L = _TPP_TEACHER, _TPP_MARKS, 2500, _TPP_EVENTS

    def normal(*shape, sd):
        return sd * torch.randn(*shape, generator=g, dtype=torch.float64)

    gru = (normal(3 * H, K + 2, sd=2 / math.sqrt(K + 2)), normal(3 * H, H, sd=3 / math.sqrt(H)),
           normal(3 * H, sd=0.1), normal(3 * H, sd=0.1))
    teacher = dict(gru=gru, v=normal(H, sd=2.5 / math.sqrt(H)), U=normal(K, H, sd=8 / math.sqrt(H)))
    h = torch.zeros(n, H, dtype=torch.float64)
    tau = torch.zeros(n, L, dtype=torch.float64)
    mark = torch.zeros(n, L, dtype=torch.long)
    for j in range(L):
        a, logits = _tpp_teacher_heads(teacher, h)
        e = -torch.rand(n, generator=g, dtype=torch.float64).log()  # τ solves Λ(τ) = e ~ Exp(1)
        tau[:, j] = (torch.log1p(_TPP_DRIFT * e * torch.exp(-a)) / _TPP_DRIFT).float().double()
        mark[:, j] = _draw(torch.softmax(logits, -1), g)
        h = _gru_cell(_tpp_teacher_input(tau[:, j], mark[:, j]), h, *gru)
    X = torch.stack([tau, mark.double()], -1)
    return X[:2000].float(), X[:2000], X[2000:].float(), X[2000:], teacher


class _RMTPP(nn.Module):
    """RMTPP (Du et al. 2016): a GRU of 32 units reads at each event the mark's embedding (8 → 8),
    its gap τ and log τ. From the state before event j, h_{j−1} (h_0 = 0, the start), the next
    event's intensity λ(t) = exp(v·h_{j−1} + w (t − t_{j−1}) + b) (v, b a linear head; w one
    learned scalar, started at 0.1) and its mark's logits (a linear head). ``forward`` maps
    sequences (n, L, 2: gaps and marks) to (n, L, 2 + 8): a = v·h_{j−1} + b, w and the mark logits
    of each event j."""

    def __init__(self, hidden: int = 32, embed: int = 8):
        super().__init__()
        self.embed = nn.Embedding(_TPP_MARKS, embed)
        self.gru = nn.GRU(embed + 2, hidden, batch_first=True)
        self.time = nn.Linear(hidden, 1)
        self.w = nn.Parameter(torch.tensor(0.1))
        self.mark = nn.Linear(hidden, _TPP_MARKS)

    def states(self, x):
        """h_0 = 0, h_1, …, h_{L−1}: the state before each event (after the ones before it)."""
        tau = x[..., :1]
        h, _ = self.gru(torch.cat([self.embed(x[..., 1].long()), tau, tau.log()], -1))
        return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)

    def forward(self, x):
        h = self.states(x)
        a = self.time(h)
        return torch.cat([a, self.w.expand_as(a), self.mark(h)], -1)


def _rmtpp_nll(out, y):
    """The negative log-likelihood per event of the sequences y (n, L, 2: gaps and marks) under
    the RMTPP outputs (n, L, 2 + 8: a, w, the mark logits), the mean over events and sequences."""
    tau, mark = y[..., 0].to(out.dtype), y[..., 1].long()
    return -_rmtpp_log_lik(out[..., 0], out[..., 1], out[..., 2:], tau, mark).mean()


def tpp_rmtpp(seed: int) -> Task:
    """A recurrent marked temporal point process (RMTPP: a GRU over the events, an exponential
    intensity between them, a softmax over the next mark) on sequences of 32 events with 8 marks
    drawn from a known RMTPP with a smaller GRU, batch 32, 6 epochs (372 steps). Train loss: the
    exact negative log-likelihood per event (the gap's density in closed form plus the mark's
    cross-entropy; the teacher's own, 1.161, is the floor). Test metric: the same on the test
    sequences."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_rmtpp_nll)

    return _array_task("tpp_rmtpp", _RMTPP(), _tpp_sequences()[:4], seed, batch=32,
                       epochs=6, loss=loss, full_loss=full, metric=("test_nll", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 34: two more kinds of model not in the selection (a hypernetwork, a small net
# from a 4-d context to the 49 weights of a 1-16-1 tanh network applied to that context's points:
# multiplicative, the gradient of one weight through another net; L1-penalised logistic
# regression, convex but not smooth where a weight is 0, on 500 strongly correlated features),
# each with a floor that no method can pass: the curves are a known hypernetwork's plus N(0, 0.3²)
# noise (0.09, 0.0887 on the training targets), the labels a sparse logistic teacher's draws (the
# penalised optimum on the training points, 0.3818 by proximal gradient in float64, is the floor).
# The hypernetwork can represent its teacher exactly, so that the budget, not the model, keeps a
# run off its floor. Budgets fixed from plain runs at seed 0 before any QLAB run.
# hypernet_curves, 16 epochs: Adam 0.1108 (lr 0.01), heavy ball 0.1139 (lr 0.01), SGD 0.1335 (lr
# 0.1; heavy ball at lr 0.1 and SGD at lr 1 diverge), from 1.019 (seed 1: 0.1112, 0.1146 and
# 0.1306); at 6 epochs 0.1124 (0.01), 0.1034 (0.01) and 0.1034 (0.1) with noise 0.25 (floor 0.0616),
# at 12 epochs 0.1266 (0.001), 0.1220 (0.01) and 0.1209 (0.1), at 24 epochs 0.1068 (0.01), 0.1115
# (0.01) and 0.1273 (0.1): SGD at lr 0.1 sits at the edge of stability, not better for longer.
# Sixteen epochs: Adam's best run ends 25 % above the training targets' noise (20 % at 24); with
# noise 0.25 it ended 82 % above at 6 epochs, 31 % at 24.
# lasso_logistic, 3 epochs: Adam 0.4367 (lr 0.001), heavy ball 0.4346 (lr 0.01), SGD 0.4454 (lr
# 0.01), from 0.835 (seed 1: 0.4415, 0.4324 and 0.4420); at 2 epochs 0.4577 (0.001), 0.4367 (0.01)
# and 0.4613 (0.1), at 6 epochs 0.4142 (0.001), 0.4191 (0.001) and 0.4196 (0.01); Adam at lr 0.01
# stays at 0.44–0.46 from 2 to 6 epochs, its noise on 500 weights held off 0 costing in the penalty.
# Three epochs: Adam's best run ends 14 % above the floor (8.5 % at six). With 200 features
# (correlation 0.8 or 0.95) every method came within 7–12 % of its optimum in 2–4 epochs, held
# there by its constant step's noise, not by the budget: hence 500. One plain run takes 0.5–0.7 s
# (hypernet_curves) and 0.06–0.1 s (lasso_logistic) on one thread here, beside another job.
# ---------------------------------------------------------------------------------------------
_HYPER_CTX, _HYPER_POINTS, _HYPER_UNITS, _HYPER_TEACHER = 4, 16, 16, 16
_HYPER_THETA, _HYPER_NOISE = 3 * _HYPER_UNITS + 1, 0.3  # θ: w1, b1, w2 (16 each) and b2


def _hyper_target(x, theta):
    """The target network f(x; θ) = Σ_k w2_k tanh(w1_k x + b1_k) + b2 at each row's points x (n,
    K), under that row's weights θ (n, 49: w1, b1, w2 of its 16 units, then b2). (n, K)"""
    w1, b1, w2, b2 = theta.split([_HYPER_UNITS] * 3 + [1], -1)
    h = torch.tanh(x[..., None] * w1[:, None] + b1[:, None])
    return (h * w2[:, None]).sum(-1) + b2


def _hyper_teacher_theta(teacher, Z):
    """The teacher's weights θ(z) of the target network for each context z (n, 4): s ⊙ (θ_0 + B
    tanh(A z + a)), then w2 and b2 read (w2/σ, (b2 − μ)/σ), so that the targets are standardised.
    (n, 49)"""
    T = teacher
    theta = T["scale"] * (T["theta0"] + torch.tanh(Z @ T["A"].T + T["a"]) @ T["B"].T)
    w2, b2 = theta[:, 2 * _HYPER_UNITS:3 * _HYPER_UNITS], theta[:, -1:]
    return torch.cat([theta[:, :2 * _HYPER_UNITS], w2 / T["sd"], (b2 - T["mu"]) / T["sd"]], -1)


@functools.lru_cache(maxsize=1)
def _hyper_data():
    """A family of 1-D curves indexed by a context z ∈ ℝ⁴, each curve a 1-16-1 tanh network whose
    49 weights a teacher hypernetwork computes from z (``_hyper_teacher_theta``): h = tanh(A z +
    a) of 16 units, A (16 × 4) N(0, 1.5²/4), a N(0, 0.1²); θ(z) = s ⊙ (θ_0 + B h), B (49 × 16)
    N(0, 1/16), θ_0 standard normal, s = 1.5 on w1, 1 on b1, 0.25 on w2, 1 on b2; w2 and b2 then
    rescaled and shifted by one σ and μ (the raw outputs' spread and mean over all the points) so
    that the targets have mean 0 and unit standard deviation. Each row: a context z ~ N(0, I₄)
    and 16 points x ~ U(−2, 2), both rounded to float32; the targets f(x; θ(z)) plus N(0, 0.3²)
    noise (the noise alone costs 0.09, 0.0887 on the training targets, 0.0882 on the test ones).
    One fixed seed, 2000 training and 500 test rows. X (n, 4 + 16, float32): z, then the points;
    y (n, 16, 2, float64): the noisy targets and f; and the teacher's weights."""
    g = torch.Generator().manual_seed(2060)
    H, C, U, K, n = _HYPER_TEACHER, _HYPER_CTX, _HYPER_UNITS, _HYPER_POINTS, 2500

    def normal(*shape, sd=1.0):
        return sd * torch.randn(*shape, generator=g, dtype=torch.float64)

    scale = torch.tensor([1.5] * U + [1.0] * U + [0.25] * U + [1.0], dtype=torch.float64)
    teacher = dict(A=normal(H, C, sd=1.5 / math.sqrt(C)), a=normal(H, sd=0.1),
                   B=normal(_HYPER_THETA, H, sd=1 / math.sqrt(H)), theta0=normal(_HYPER_THETA),
                   scale=scale, mu=0.0, sd=1.0)
    Z = normal(n, C).float().double()
    x = (4 * torch.rand(n, K, generator=g, dtype=torch.float64) - 2).float().double()
    raw = _hyper_target(x, _hyper_teacher_theta(teacher, Z))
    teacher.update(mu=float(raw.mean()), sd=float(raw.std()))
    clean = _hyper_target(x, _hyper_teacher_theta(teacher, Z))
    y = torch.stack([clean + _HYPER_NOISE * normal(n, K), clean], -1)
    X = torch.cat([Z, x], -1)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:], teacher


class _HyperNet(nn.Module):
    """A hypernetwork (Ha et al. 2017): from each row's context z, θ(z) = θ_0 + W tanh(V z + c) + d
    (V: 32 × 4 and W: 49 × 32 linear layers) are the 49 weights of a 1-16-1 tanh network applied
    to that row's 16 points (``_hyper_target``). θ_0, a learned vector, is started as nn.Linear(1,
    16) and nn.Linear(16, 1) start their weights and biases (w1, b1 U(±1), w2, b2 U(±1/4)). 1826
    parameters; the teacher (16 units) is one of its settings."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Linear(_HYPER_CTX, hidden)
        self.head = nn.Linear(hidden, _HYPER_THETA)
        first, second = nn.Linear(1, _HYPER_UNITS), nn.Linear(_HYPER_UNITS, 1)
        self.theta0 = nn.Parameter(torch.cat([first.weight.detach()[:, 0], first.bias.detach(),
                                              second.weight.detach()[0], second.bias.detach()]))

    def forward(self, X):
        z, x = X[:, :_HYPER_CTX], X[:, _HYPER_CTX:]
        return _hyper_target(x, self.theta0 + self.head(torch.tanh(self.body(z))))


def hypernet_curves(seed: int) -> Task:
    """A hypernetwork mapping a 4-d context to the 49 weights of a 1-16-1 tanh network, fitting
    16 noisy points of that context's curve, the curves a known hypernetwork's, N(0, 0.3²) noise
    on the targets, batch 32, 16 epochs (992 steps). Train loss: the MSE to the noisy targets (the
    noise alone costs 0.09). Test metric: the same on the test rows."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_noisy_mse)

    return _array_task("hypernet_curves", _HyperNet(), _hyper_data()[:4], seed, batch=32,
                       epochs=16, loss=loss, full_loss=full, metric=("test_mse", full))


_LASSO_FEATURES, _LASSO_SUPPORT, _LASSO_RHO, _LASSO_LAMBDA = 500, 20, 0.95, 0.01


@functools.lru_cache(maxsize=1)
def _lasso_data():
    """Binary labels from a sparse logistic teacher on strongly correlated features: x an AR(1)
    chain along its 500 features, x_0 = e_0, x_j = 0.95 x_{j−1} + √(1 − 0.95²) e_j (e standard
    normal: each feature N(0, 1), corr(x_j, x_k) = 0.95^|j−k|), rounded to float32; 20 features
    drawn at random carry weights ±U(0.5, 1.5) (the sign a fair coin), the others 0; the label
    1 with probability σ(w*·x + 0.3) (by a uniform below it). The floor is the penalised optimum
    on the training points, min_{w, b} mean log-loss + 0.01 ‖w‖₁ = 0.3818 (54 weights nonzero;
    its log-loss alone 0.280, the teacher's 0.266 and its objective 0.442). One fixed seed, 2000
    training and 500 test points. X (n, 500, float32); y (n, 2, float64): the label and the
    teacher's probability; and w*."""
    g = torch.Generator().manual_seed(2062)
    d, k, rho, n = _LASSO_FEATURES, _LASSO_SUPPORT, _LASSO_RHO, 2500
    e = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = torch.empty_like(e)
    X[:, 0] = e[:, 0]
    for j in range(1, d):
        X[:, j] = rho * X[:, j - 1] + math.sqrt(1 - rho ** 2) * e[:, j]
    X = X.float().double()
    support = torch.randperm(d, generator=g)[:k]
    sign = torch.where(torch.rand(k, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    w = torch.zeros(d, dtype=torch.float64)
    w[support] = (0.5 + torch.rand(k, generator=g, dtype=torch.float64)) * sign
    p = torch.sigmoid(X @ w + 0.3)
    y = torch.stack([(torch.rand(n, generator=g, dtype=torch.float64) < p).double(), p], -1)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:], w


class _Logistic(nn.Linear):
    """Logistic regression: the logit w·x + b of each point (nn.Linear(500, 1)'s start). (n,)"""

    def __init__(self):
        super().__init__(_LASSO_FEATURES, 1)

    def forward(self, x):
        return super().forward(x)[..., 0]


# The mean logistic loss of the logits to the labels y[:, 0] plus 0.01 Σ ‖W‖₁ over the weight
# matrices W (the bias is not penalised).
_lasso_loss, _eval_lasso = _loss_and_full(
    lambda logits, y: F.binary_cross_entropy_with_logits(logits, y[:, 0].to(logits.dtype)),
    penalty=lambda weights: _LASSO_LAMBDA * sum(W.abs().sum() for W in weights))


@torch.no_grad()
def _test_log_loss(m, X, y):
    """The mean logistic loss (no penalty) to the labels y[:, 0]."""
    return float(F.binary_cross_entropy_with_logits(m(X).double(), y[:, 0]))


def lasso_logistic(seed: int) -> Task:
    """L1-penalised (lasso) logistic regression on 500 strongly correlated features, the labels a
    sparse logistic teacher's draws, batch 32, 3 epochs (186 steps). Train loss: the mean
    log-loss plus 0.01 ‖w‖₁, not smooth where a weight is 0 (the penalised optimum, 0.382, is
    the floor). Test metric: the log-loss alone on the test points."""
    torch.manual_seed(seed)

    return _array_task("lasso_logistic", _Logistic(), _lasso_data()[:4], seed, batch=32,
                       epochs=3, loss=_lasso_loss, full_loss=_eval_lasso,
                       metric=("test_log_loss", _test_log_loss))


# ---------------------------------------------------------------------------------------------
# Held out of round 35: two more kinds of model not in the selection (a sparse variational GP:
# an ARD RBF kernel's length-scales and variances learned with 32 inducing inputs and a full
# Cholesky-factored q by mini-batches of the ELBO, through a Cholesky factorisation, logs and
# exps; a multi-task net: one tanh trunk under a regression head and a classification head whose
# two losses, of different kinds and sizes, share its gradient), each with a floor that no method
# can pass: the exact GP's least NLL per point on the training points (0.8378 at ℓ = 0.655 and
# 0.829, σ_f² = 1.197, σ_n² = 0.253, by L-BFGS in float64), a lower bound of the negative ELBO
# at every setting (the best SVGP found, from two starts by L-BFGS in float64, 0.8472); the
# regression targets' noise (0.09, 0.0896 on the training targets), the KL to the teacher's class
# probabilities being ≥ 0 and the teacher one of the model's settings. Budgets fixed from plain
# runs at seeds 0 and 1 before any QLAB run.
# sparse_gp, 10 epochs: Adam 0.9940 (lr 0.1), heavy ball 1.0561 (lr 0.1), SGD 1.1316 (lr 1), from
# 2.028 (seed 1: 0.9580, 0.9789 and 1.1660; Adam at lr 1 diverges at seed 0); at 5 epochs 0.9971
# (0.1), 1.1574 (0.1) and 1.0816 (1), at 20 epochs 0.9085 (0.01), 0.9827 (0.1) and 1.0700 (1);
# Adam at lr 0.1 stays at 0.99–1.02 from 5 to 20 epochs, held there by its step's noise, while at
# lr 0.01 it goes 1.022, 0.909, 0.888 and 0.879 at 10, 20, 30 and 60 epochs. Ten epochs: Adam's
# best run ends 19 % above the floor (14 % at seed 1). 32 inducing points in two dimensions keep
# the SVGP within 1.1 % of the exact GP; in four (length-scales 0.6–2.5) the best SVGP was 18 %
# above it, in three with 48 points 7 %: hence two.
# multitask_heads, 40 epochs: heavy ball 0.1164 (lr 0.1), Adam 0.1222 (lr 0.01), SGD 0.1350 (lr
# 1), from 1.813 (seed 1: 0.1145, 0.1177 and 0.1530; heavy ball at lr 1 diverges); at 20 epochs
# 0.1350 (0.1), 0.1369 (0.01) and 0.1579 (1), at 60 epochs 0.1131 (0.1), 0.1198 (0.01) and 0.1396
# (0.1). Forty epochs: the best plain run ends 30 % above the floor (28 % at seed 1; 26 % at 60).
# Drafts with two regression outputs let Adam pass the teacher: with class labels drawn from it,
# its cross-entropy 0.71 against the teacher's 0.80 at 10 epochs; with its probabilities, its MSE
# 0.081 against the noise's 0.093 at 40. Hence the KL to the probabilities (≥ 0 exactly) and eight
# outputs a row (16,000 noisy targets for 5581 parameters): in a draft with other noise draws the
# best plain runs' MSE part was still 0.093–0.098 against the noise's 0.091 at 100 epochs. One
# plain run takes 0.25–0.5 s (sparse_gp) and 1.4–3.3 s (multitask_heads) on one thread here,
# beside another job.
# ---------------------------------------------------------------------------------------------
_GP_DIM, _GP_INDUCING, _GP_TRAIN, _GP_NOISE = 2, 32, 600, 0.5
_GP_SCALES, _GP_FEATURES = (0.6, 0.9), 256  # the data's length-scales; random Fourier features


@functools.lru_cache(maxsize=1)
def _gp_data():
    """A smooth random function of x ∈ [−2, 2]² plus noise: f = Σ_k a_k cos(ω_k·x + b_k) over 256
    random Fourier features of an RBF kernel with length-scales 0.6 and 0.9 (ω_k ~ N(0, diag(1/ℓ²)),
    b_k ~ U(0, 2π), a_k ~ N(0, 2/256): nearly a draw of that GP), centred and scaled to unit
    standard deviation over all the points; x ~ U(−2, 2)², rounded to float32; the targets f(x)
    plus N(0, 0.5²) noise. One fixed seed, 600 training and 400 test points. X (n, 2, float32); y
    (n, 2, float64): the noisy target and f."""
    g = torch.Generator().manual_seed(2064)
    n, K = _GP_TRAIN + 400, _GP_FEATURES
    X = (4 * torch.rand(n, _GP_DIM, generator=g, dtype=torch.float64) - 2).float().double()
    omega = (torch.randn(K, _GP_DIM, generator=g, dtype=torch.float64)
             / torch.tensor(_GP_SCALES, dtype=torch.float64))
    b = 2 * math.pi * torch.rand(K, generator=g, dtype=torch.float64)
    a = math.sqrt(2 / K) * torch.randn(K, generator=g, dtype=torch.float64)
    f = torch.cos(X @ omega.T + b) @ a
    f = (f - f.mean()) / f.std()
    y = torch.stack([f + _GP_NOISE * torch.randn(n, generator=g, dtype=torch.float64), f], -1)
    return X[:_GP_TRAIN].float(), y[:_GP_TRAIN], X[_GP_TRAIN:].float(), y[_GP_TRAIN:]


def _rbf(A, B, lengthscales, variance):
    """The ARD RBF kernel σ_f² exp(−½ Σ_d (a_d − b_d)² / ℓ_d²) between the rows of A and of B."""
    d = (A[:, None, :] - B[None, :, :]) / lengthscales
    return variance * torch.exp(-0.5 * (d * d).sum(-1))


class _SparseGP(nn.Module):
    """A sparse variational GP (SVGP, Hensman et al. 2013, whitened): an ARD RBF kernel with
    learned length-scales ℓ, signal variance σ_f² and noise variance σ_n² (each as its log,
    started at 0: all 1); 32 inducing inputs Z (started U(−2, 2)² from the seed) with u = L v, L
    the Cholesky factor of K_ZZ (plus 10⁻⁶ σ_f² on its diagonal), and q(v) = N(m, S), S = C Cᵀ, C
    the lower triangle of a learned matrix (started at I, m at 0: q is the prior). Computed in
    float64 from the float32 parameters; a factorisation that fails gives NaN, never an error.
    1124 parameters (the 496 above C's diagonal unused)."""

    def __init__(self):
        super().__init__()
        self.Z = nn.Parameter(4 * torch.rand(_GP_INDUCING, _GP_DIM) - 2)
        self.log_lengthscale = nn.Parameter(torch.zeros(_GP_DIM))
        self.log_variance = nn.Parameter(torch.zeros(()))
        self.log_noise = nn.Parameter(torch.zeros(()))
        self.mean = nn.Parameter(torch.zeros(_GP_INDUCING))
        self.chol = nn.Parameter(torch.eye(_GP_INDUCING))

    def marginals(self, x):
        """q(f(x)) at each row: its mean a·m and variance σ_f² − ‖a‖² + ‖Cᵀa‖², a = L⁻¹ k_Z(x);
        and C. (float64)"""
        Z, ell = self.Z.double(), self.log_lengthscale.double().exp()
        var = self.log_variance.double().exp()
        eye = torch.eye(_GP_INDUCING, dtype=torch.float64)
        L = torch.linalg.cholesky_ex(_rbf(Z, Z, ell, var) + 1e-6 * var * eye)[0]
        A = torch.linalg.solve_triangular(L, _rbf(Z, x.double(), ell, var), upper=False)
        C = torch.tril(self.chol.double())
        return A.T @ self.mean.double(), var - (A * A).sum(0) + ((C.T @ A) ** 2).sum(0), C

    def neg_elbo(self, x, y):
        """−ELBO per training point, unbiased on a batch: −mean E_q log N(y | f, σ_n²) over the
        rows plus KL(q(v) ‖ N(0, I)) / 600. (float64)"""
        mu, var, C = self.marginals(x)
        noise, m = self.log_noise.double().exp(), self.mean.double()
        fit = 0.5 * torch.log(2 * math.pi * noise) + ((y[:, 0] - mu) ** 2 + var) / (2 * noise)
        kl = 0.5 * ((C * C).sum() + m @ m - _GP_INDUCING - torch.log(C.diagonal() ** 2).sum())
        return fit.mean() + kl / _GP_TRAIN

    def forward(self, x):
        return self.marginals(x)[0]


def _gp_loss(m, x, y):
    return m.neg_elbo(x, y)


@torch.no_grad()
def _eval_gp(m, X, y):
    return float(m.neg_elbo(X, y))


@torch.no_grad()
def _gp_test_nll(m, X, y):
    """The predictive NLL per test point: −log N(y | μ, s² + σ_n²), q(f(x)) = N(μ, s²)."""
    mu, var, _ = m.marginals(X)
    total = var + m.log_noise.double().exp()
    return float((0.5 * torch.log(2 * math.pi * total) + (y[:, 0] - mu) ** 2 / (2 * total)).mean())


def sparse_gp(seed: int) -> Task:
    """A sparse variational GP regression (32 inducing points, an ARD RBF kernel whose
    length-scales, signal and noise variances are learned with the variational posterior), batch
    32, 10 epochs (180 steps). Train loss: the negative ELBO per point (at least the exact GP's
    NLL per point at the same hyperparameters; its minimum over them, 0.838, is the floor). Test
    metric: the predictive NLL on the test points."""
    torch.manual_seed(seed)

    return _array_task("sparse_gp", _SparseGP(), _gp_data(), seed, batch=32, epochs=10,
                       loss=_gp_loss, full_loss=_eval_gp, metric=("test_nll", _gp_test_nll))


_MTL_IN, _MTL_TEACHER, _MTL_HIDDEN, _MTL_REG, _MTL_CLASSES = 8, 32, 64, 8, 5
_MTL_NOISE, _MTL_SHARP = 0.3, 3.0  # the regression targets' noise; the teacher's logits' scale


@functools.lru_cache(maxsize=1)
def _mtl_data():
    """Two tasks on the same inputs from one teacher with a shared trunk: h = tanh(W2 tanh(W1 x +
    b1) + b2) of 32 units (W1 N(0, 1.5²/8), W2 N(0, 1.5²/32), biases N(0, 0.1²)); eight regression
    targets R h (R N(0, 1/32)), each centred and scaled to unit standard deviation over all the
    rows, plus N(0, 0.3²) noise (the noise alone costs 0.09, 0.0896 on the training targets); and
    the probabilities softmax(V h) of five classes (V N(0, 3²/32): the teacher's mean entropy 0.99
    nats of log 5 = 1.61). x ~ N(0, I₈), rounded to float32. One fixed seed, 2000 training and 500
    test rows. X (n, 8, float32); y (n, 21, float64): the noisy targets, the class probabilities,
    the noise-free targets; and the teacher (W1, b1, W2, b2, the rescaled R and its shift, V)."""
    g = torch.Generator().manual_seed(2066)
    d, H, n = _MTL_IN, _MTL_TEACHER, 2500

    def normal(*shape, sd=1.0):
        return sd * torch.randn(*shape, generator=g, dtype=torch.float64)

    W1, b1 = normal(H, d, sd=1.5 / math.sqrt(d)), normal(H, sd=0.1)
    W2, b2 = normal(H, H, sd=1.5 / math.sqrt(H)), normal(H, sd=0.1)
    R = normal(_MTL_REG, H, sd=1 / math.sqrt(H))
    V = normal(_MTL_CLASSES, H, sd=_MTL_SHARP / math.sqrt(H))
    X = normal(n, d).float().double()
    h = torch.tanh(torch.tanh(X @ W1.T + b1) @ W2.T + b2)
    raw = h @ R.T
    mu, sd = raw.mean(0), raw.std(0)
    R, c = R / sd[:, None], -mu / sd
    clean, p = h @ R.T + c, torch.softmax(h @ V.T, -1)
    y = torch.cat([clean + _MTL_NOISE * normal(n, _MTL_REG), p, clean], -1)
    teacher = dict(W1=W1, b1=b1, W2=W2, b2=b2, R=R, c=c, V=V)
    return X[:2000].float(), y[:2000], X[2000:].float(), y[2000:], teacher


class _TwoHeads(nn.Module):
    """A shared 8-64-64 tanh trunk and two linear heads on it: eight regression outputs and five
    class logits, concatenated (n, 13). 5581 parameters; the teacher (32 units) is one of its
    settings."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(_MTL_IN, _MTL_HIDDEN), nn.Tanh(),
                                   nn.Linear(_MTL_HIDDEN, _MTL_HIDDEN), nn.Tanh())
        self.regress = nn.Linear(_MTL_HIDDEN, _MTL_REG)
        self.classify = nn.Linear(_MTL_HIDDEN, _MTL_CLASSES)

    def forward(self, x):
        h = self.trunk(x)
        return torch.cat([self.regress(h), self.classify(h)], -1)


def _two_task_loss(out, y):
    """The MSE of the regression outputs to the noisy targets y[:, :8] plus KL(teacher ‖ model)
    of the class logits to the teacher's probabilities y[:, 8:13], unweighted."""
    y = y.to(out.dtype)
    mse = ((out[:, :_MTL_REG] - y[:, :_MTL_REG]) ** 2).mean()
    return mse + _kl_of(out[:, _MTL_REG:], y[:, _MTL_REG:_MTL_REG + _MTL_CLASSES])


def multitask_heads(seed: int) -> Task:
    """A multi-task net: one 8-64-64 tanh trunk under a regression head (8 outputs) and a
    classification head (5 classes), fitting a teacher of the same form, batch 32, 40 epochs (2480
    steps). Train loss: the MSE to the noisy regression targets plus the KL to the teacher's class
    probabilities (the noise alone costs 0.09). Test metric: the same on the test rows."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_two_task_loss)

    return _array_task("multitask_heads", _TwoHeads(), _mtl_data()[:4], seed, batch=32,
                       epochs=40, loss=loss, full_loss=full, metric=("test_loss", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 36: two more kinds of model not in the selection (an encoder-decoder
# transformer trained with teacher forcing, its decoder reading the encoder through
# cross-attention; a Gaussian mixture fitted by direct maximum likelihood, its weights, means and
# Cholesky-factored covariances learned together through a log-sum-exp over the components), each
# with a floor: the output noise's entropy, 0.9903 nats a token (exact; by Gibbs's inequality no
# prediction of a token drawn independently of everything the model reads does better in
# expectation; the noise's own conditional reads 0.99 on the training tokens, each pair seen once);
# the least NLL per training point found, 1.515009, by EM in float64 from the true mixture and
# from 11 k-means and random starts (scikit-learn; two reach it, the others 1.519–1.536; the true
# mixture 1.5393). Budgets fixed from plain runs at seeds 0 and 1 before any QLAB run.
# seq2seq_reverse, 1 epoch of 6400 pairs (200 steps): Adam 1.1080 (lr 0.01), heavy ball 1.7933
# (lr 1), SGD 2.7332 (lr 1), from 2.94 (seed 1: Adam 1.5279 (0.01), Adam 2.0071 (0.001), heavy
# ball 2.7420 (1)); the best ends 12 % above the floor (54 % at seed 1). Reversal is learned
# first (the plateau near 1.6: the one-in-two carry unread), then the carry, abruptly: with 300
# steps Adam at lr 0.01 ends 4.7 % above (1.0373; seed 1 5.1 %), with 240 (7680 pairs) 12 % and
# 8 %; plain reversal (V = 10 or 16) reached 1–3 % above within 250 steps, and with 2000 pairs
# over 10 epochs Adam passed the noise's own conditional on the training tokens (0.826 against
# 0.857: the noise memorised), hence one pass over fresh pairs and the carry. A sum of two source
# tokens (mod V) instead was not learned at all in 625 steps.
# gmm_density, 5 epochs (310 steps): Adam 1.7408 (lr 0.01), heavy ball 2.0335 (lr 0.01), SGD
# 2.2155 (lr 0.1), from 5.77 (seed 1: 1.7479, 2.1504 and 2.2042); the best ends 15 % above the
# floor (15 % at seed 1). At twice the data's scale (floor 3.59) Adam at lr 0.01 ended 3.3 %
# above at 10 epochs: the ratio shrinks with the NLL's offset, hence the scale (the NLL per point
# near 1.5, no shift). One plain run takes 1.3–6.5 s (seq2seq_reverse; 2–3 s when the machine
# is quieter) and about 0.6 s (gmm_density; 1.0–1.35 s at 10 epochs) on one thread here, beside
# another job.
# ---------------------------------------------------------------------------------------------
_S2S_VOCAB, _S2S_LEN, _S2S_NOISE, _S2S_TRAIN = 16, 16, 0.2, 6400
_S2S_BOS = _S2S_VOCAB  # the decoder's start token, the embedding's last row


def _s2s_floor():
    """The noise's entropy per output token in nats: each output token is the reversed input's
    with probability 1 − ε + ε/V and each other token's with ε/V."""
    right, other = 1 - _S2S_NOISE + _S2S_NOISE / _S2S_VOCAB, _S2S_NOISE / _S2S_VOCAB
    return -right * math.log(right) - (_S2S_VOCAB - 1) * other * math.log(other)


def _s2s_clean(src):
    """The noise-free output: the source reversed, r, each token r_t raised by one (mod 16)
    where the next, r_(t+1) (r_0 after the last), is in the vocabulary's upper half."""
    r = src.flip(1)
    return (r + (r.roll(-1, 1) >= _S2S_VOCAB // 2).long()) % _S2S_VOCAB


@functools.lru_cache(maxsize=1)
def _reversal_pairs():
    """Sequences of 16 tokens uniform over a vocabulary of 16, and their noise-free outputs
    (_s2s_clean) with each output token replaced, with probability 0.2, by a uniform token
    (possibly itself): the noise's entropy, 0.9903 nats a token, is what no model can predict.
    One fixed seed, 6400 training pairs (one epoch: each seen once, so the noise cannot be
    memorised) and 1000 test pairs. X (n, 32, long): the source and the decoder's input (the
    start token, then the noisy output shifted right: teacher forcing); y (n, 16, long): the noisy
    output."""
    g = torch.Generator().manual_seed(2068)
    n, T, V = _S2S_TRAIN + 1000, _S2S_LEN, _S2S_VOCAB
    src = torch.randint(0, V, (n, T), generator=g)
    replace = torch.rand(n, T, generator=g) < _S2S_NOISE
    y = torch.where(replace, torch.randint(0, V, (n, T), generator=g), _s2s_clean(src))
    X = torch.cat([src, torch.full((n, 1), _S2S_BOS), y[:, :-1]], 1)
    return X[:_S2S_TRAIN], y[:_S2S_TRAIN], X[_S2S_TRAIN:], y[_S2S_TRAIN:]


class _Attention(nn.Module):
    """Multi-head attention of the rows of x on those of ctx (itself for self-attention)."""

    def __init__(self, d, heads):
        super().__init__()
        self.q, self.kv, self.proj = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.heads = heads

    def forward(self, x, ctx, causal=False):
        B, T, D = x.shape
        k, v = self.kv(ctx).split(D, dim=-1)
        sh = lambda t: t.view(B, -1, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(sh(self.q(x)), sh(k), sh(v), is_causal=causal)
        return self.proj(a.transpose(1, 2).reshape(B, T, D))


class _Seq2Seq(nn.Module):
    """A pre-norm encoder-decoder transformer (d 32, 2 heads): one encoder block (self-attention,
    MLP), one decoder block (causal self-attention, cross-attention on the encoder's normalised
    output, MLP), token embeddings shared by both sides (the start token the decoder's alone),
    learned positions for each, a final LayerNorm and a linear head: the logits (n, 16, 16) of
    each output token. 31,920 parameters."""

    def __init__(self, d=32, heads=2):
        super().__init__()
        self.tok = nn.Embedding(_S2S_VOCAB + 1, d)
        self.src_pos = nn.Parameter(torch.randn(_S2S_LEN, d))
        self.tgt_pos = nn.Parameter(torch.randn(_S2S_LEN, d))
        self.enc_ln1, self.enc_ln2, self.enc_out = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.enc_attn, self.enc_mlp = _Attention(d, heads), _gelu_mlp(d)
        self.dec_ln1, self.dec_ln2, self.dec_ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dec_self, self.dec_cross = _Attention(d, heads), _Attention(d, heads)
        self.dec_mlp, self.ln, self.head = _gelu_mlp(d), nn.LayerNorm(d), nn.Linear(d, _S2S_VOCAB)

    def forward(self, x):
        src, tgt = x[:, :_S2S_LEN], x[:, _S2S_LEN:]
        e = self.tok(src) + self.src_pos
        h = self.enc_ln1(e)
        e = e + self.enc_attn(h, h)
        e = self.enc_out(e + self.enc_mlp(self.enc_ln2(e)))
        z = self.tok(tgt) + self.tgt_pos
        h = self.dec_ln1(z)
        z = z + self.dec_self(h, h, causal=True)
        z = z + self.dec_cross(self.dec_ln2(z), e)
        z = z + self.dec_mlp(self.dec_ln3(z))
        return self.head(self.ln(z))


def _token_ce(logits, y):
    return F.cross_entropy(logits.reshape(-1, _S2S_VOCAB), y.reshape(-1))


@torch.no_grad()
def _clean_token_acc(model, X, y):
    """The fraction of the output tokens whose argmax is the noise-free output's."""
    return float((model(X).argmax(-1) == _s2s_clean(X[:, :_S2S_LEN])).double().mean())


def seq2seq_reverse(seed: int) -> Task:
    """An encoder-decoder transformer (one pre-norm block each side, d 32, 2 heads, the decoder
    cross-attending to the encoder) trained with teacher forcing to reverse sequences of 16 tokens
    (with a carry) whose outputs are noisy, batch 32, 1 epoch (200 steps). Train loss: the
    cross-entropy per output token (the noise's entropy, 0.9903 nats, is the floor). Test metric:
    the token accuracy of the argmax to the noise-free output on the test pairs."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(_token_ce)

    return _array_task("seq2seq_reverse", _Seq2Seq(), _reversal_pairs(), seed, batch=32,
                       epochs=1, loss=loss, full_loss=full,
                       metric=("test_clean_acc", _clean_token_acc))


_GMM_K, _GMM_DIM, _GMM_TRAIN, _GMM_LEAST = 6, 4, 2000, 0.05  # least Cholesky diagonal: see _GMM


@functools.lru_cache(maxsize=1)
def _gmm_data():
    """Draws of a fixed random Gaussian mixture of six components in four dimensions: weights
    softmax(0.4 g), g ~ N(0, I₆); means N(0, 0.5² I₄); each covariance Q diag(s)² Qᵀ, Q a
    random rotation (the QR factor of a Gaussian matrix), the scales s ~ U(0.15, 0.35). One fixed
    seed, 2000 training and 1000 test points, rounded to float32. X (n, 4, float32); y (n, 1,
    long): the component each point was drawn from; and the mixture (weights, means, covariances,
    float64)."""
    g = torch.Generator().manual_seed(2070)
    K, d, n = _GMM_K, _GMM_DIM, _GMM_TRAIN + 1000
    weights = torch.softmax(0.4 * torch.randn(K, generator=g, dtype=torch.float64), 0)
    means = 0.5 * torch.randn(K, d, generator=g, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))[0]
    s = 0.15 + 0.2 * torch.rand(K, d, generator=g, dtype=torch.float64)
    A = Q * s[:, None, :]  # Σ_k = A_k A_kᵀ
    comp = torch.multinomial(weights, n, replacement=True, generator=g)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = (means[comp] + (A[comp] @ z[:, :, None])[..., 0]).float()
    mixture = dict(weights=weights, means=means, covariances=A @ A.transpose(1, 2))
    return X[:_GMM_TRAIN], comp[:_GMM_TRAIN, None], X[_GMM_TRAIN:], comp[_GMM_TRAIN:, None], mixture


class _GMM(nn.Module):
    """A Gaussian mixture of six components in four dimensions: mixture logits (started at 0),
    means (started N(0, I) from the seed) and, for each component, the Cholesky factor L of its
    covariance: the lower triangle of a learned matrix with its diagonal 0.05 + softplus(·)
    (started at 1: L = I; the 24 entries above the diagonals unused). The least diagonal bounds
    each component's density by (2π)⁻² 0.05⁻⁴, so the NLL is bounded below (a component cannot
    collapse onto a point). forward(x): the log-density of each row (n,), in float64 from the
    float32 parameters. 126 parameters."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(_GMM_K))
        self.means = nn.Parameter(torch.randn(_GMM_K, _GMM_DIM))
        start = math.log(math.expm1(1 - _GMM_LEAST))  # softplus⁻¹: the diagonal starts at 1
        self.chol = nn.Parameter(torch.eye(_GMM_DIM).repeat(_GMM_K, 1, 1) * start)

    def cholesky(self):
        raw = self.chol.double()
        diag = _GMM_LEAST + F.softplus(raw.diagonal(dim1=-2, dim2=-1))
        return torch.tril(raw, -1) + torch.diag_embed(diag)

    def forward(self, x):
        L = self.cholesky()
        diff = x.double()[None] - self.means.double()[:, None]  # (K, n, d)
        z = torch.linalg.solve_triangular(L, diff.transpose(1, 2), upper=False)  # (K, d, n)
        logdet = torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1)  # log |L_k| = ½ log |Σ_k|
        log_n = -0.5 * (z * z).sum(1) - logdet[:, None] - 0.5 * _GMM_DIM * math.log(2 * math.pi)
        return torch.logsumexp(torch.log_softmax(self.logits.double(), 0)[:, None] + log_n, 0)


def gmm_density(seed: int) -> Task:
    """A Gaussian mixture (six components, full covariances by their Cholesky factors) fitted to
    draws of another by direct maximum likelihood (no EM), batch 32, 5 epochs (310 steps). Train
    loss: the negative log-likelihood per training point (the least found, by EM from many starts
    in float64, 1.515, is the floor). Test metric: the same on the test points."""
    torch.manual_seed(seed)

    loss, full = _loss_and_full(lambda log_density, y: -log_density.mean())

    return _array_task("gmm_density", _GMM(), _gmm_data()[:4], seed, batch=32,
                       epochs=5, loss=loss, full_loss=full, metric=("test_nll", full))


# ---------------------------------------------------------------------------------------------
# Held out of round 37: two more kinds of model not in the selection (a MADE, a masked
# autoregressive MLP whose outputs are each pixel's Bernoulli logit given the pixels before it in
# a fixed order, fitted by maximum likelihood; a linear multiclass SVM, its one-vs-rest hinge loss
# convex and not smooth where a margin is 1), each with a floor: the teacher's entropy per pixel,
# 0.252648 nats (by Gibbs's inequality no model's expected NLL of a fresh draw is lower; H(X | Z)
# and H(Z) exact, H(Z | X) from 400,000 draws; the teacher reads 0.25221 on the training images,
# each seen once); the penalised hinge objective's optimum on the training points, 0.1228706,
# exact (dual coordinate ascent in float64 to a duality gap of 4e-12; the float32 weights read
# the same). Budgets fixed from plain runs at seeds 0 and 1 before any QLAB run.
# digits_made, 1 epoch of 9600 images (300 steps): Adam 0.2898 (lr 0.01), heavy ball 0.3215 (lr
# 1), SGD 0.4015 (lr 1), from 0.715 (seed 1: 0.2891, 0.3212 and 0.4026); the best ends 15 % above
# the floor (14 % at seed 1), still falling: Adam's run at lr 0.01 (seed 0) on 19200 images read
# 0.3048 at 200 steps, 0.2918 at 300, 0.2867 at 400 and 0.2805 (11 % above) at 600. A product of
# independent Bernoullis fitted to the training images reads 0.4594 (82 % above): the gap is in
# the mixture's structure (32 components, each a training digit with its pixels flipped with
# probability 0.05), which the MADE must read from the pixels before each. With the ten classes'
# pixel frequencies as the components (the floor 0.4205, the independent fit 0.4705) that gap
# was 12 %: too little of the loss was the model's to learn.
# hinge_svm, 6 epochs (222 steps): Adam 0.1361 (lr 0.01), heavy ball 0.1420 (lr 1, the grid's
# largest), SGD 0.1982 (lr 1, the largest), from 0.994 (seed 1: 0.1358, 0.1419 and 0.1982); the
# best ends 11 % above the floor (10.5 % at seed 1), still falling (Adam at lr 0.01: 0.1403 at 5
# epochs, 0.1330 at 7, 0.1273, 3.6 % above, at 12). With clean labels and λ = 0.001 (floor
# 0.1662) Adam and heavy ball were within 8 % at 2 epochs and about 1 % at 5: hence the label
# noise and the smaller penalty. Features 4 × as large (λ 16 × to keep the optimum) moved heavy
# ball's best lr off the edge, to 0.1 (SGD's stayed at 1), but left Adam at lr 0.01 level, 8–13 %
# above from the third epoch on (its noise floor), so the usual √(2/D) scale stays. One plain
# run takes 0.15–0.4 s (digits_made) and about 0.1 s (hinge_svm) on one thread here, about 0.3 s
# and 0.2 s with the task's build and final evaluation.
# ---------------------------------------------------------------------------------------------
_MADE_K, _MADE_HIDDEN, _MADE_TRAIN, _MADE_FLIP = 32, 200, 9600, 0.05


@functools.lru_cache(maxsize=1)
def _made_teacher():
    """A fixed mixture of 32 products of Bernoullis over the 64 pixels of a digit, the weights
    equal: component k, one of the training digits (_digits) drawn by a fixed seed, its pixels
    binarised at 0.5, each pixel's probability of being on 0.95 where the digit's is on and 0.05
    where it is off (a flip with probability 0.05). (32, 64, float64)"""
    Xtr = _digits()[0]
    g = torch.Generator().manual_seed(2073)
    on = (Xtr[torch.randperm(len(Xtr), generator=g)[:_MADE_K]] >= 0.5).double()
    return _MADE_FLIP + (1 - 2 * _MADE_FLIP) * on


@functools.lru_cache(maxsize=1)
def _made_data():
    """Binary images drawn from the teacher (_made_teacher): a uniform component, then each pixel
    1 where a uniform is below its probability. One fixed seed, 9600 training images (one epoch:
    each seen once, so the draws cannot be memorised) and 2000 test ones. X (n, 64, float32, 0 or
    1); y: the same images (the targets); and the components of the training and test images
    (n,, long)."""
    P = _made_teacher()
    g = torch.Generator().manual_seed(2074)
    n = _MADE_TRAIN + 2000
    comp = torch.randint(0, _MADE_K, (n,), generator=g)
    X = (torch.rand(n, 64, generator=g, dtype=torch.float64) < P[comp]).float()
    Xtr, Xte = X[:_MADE_TRAIN], X[_MADE_TRAIN:]
    return Xtr, Xtr, Xte, Xte, comp[:_MADE_TRAIN], comp[_MADE_TRAIN:]


@functools.lru_cache(maxsize=1)
def _made_floor():
    """The teacher's entropy per pixel in nats, H(X)/64, from H(X) = H(X | Z) + H(Z) − H(Z | X):
    H(X | Z) = mean_k Σ_d h(P_kd) exactly (h the binary entropy), H(Z) = log 32, and H(Z | X),
    the posterior's mean entropy over the components, from 400,000 draws of its own seed."""
    P = _made_teacher()
    h = -(P * P.log() + (1 - P) * (1 - P).log())
    g = torch.Generator().manual_seed(2075)
    post_h = 0.0
    for _ in range(20):
        comp = torch.randint(0, _MADE_K, (20000,), generator=g)
        x = (torch.rand(20000, 64, generator=g, dtype=torch.float64) < P[comp]).double()
        post = torch.log_softmax(x @ P.log().T + (1 - x) @ (1 - P).log().T, 1)
        post_h += float(-(post.exp() * post).sum())
    return (float(h.sum(1).mean()) + math.log(_MADE_K) - post_h / 400_000) / 64


class _MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask (a buffer, not a parameter)."""

    def __init__(self, n_in, n_out, mask):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


def _made_masks():
    """MADE's masks (Germain et al. 2015) from one fixed seed: the pixels in a random order (rank
    r(d) in 1..64), each hidden unit a degree m(h) uniform in 1..63; input i to hidden h where
    m(h) ≥ r(i), hidden h to output d where r(d) > m(h), and input i straight to output d where
    r(d) > r(i): output d reads only the pixels before it in the order. (ranks (64,), the three
    masks (200, 64), (64, 200), (64, 64), bool)"""
    g = torch.Generator().manual_seed(2076)
    rank = torch.randperm(64, generator=g) + 1
    deg = torch.randint(1, 64, (_MADE_HIDDEN,), generator=g)
    return (rank, deg[:, None] >= rank[None], rank[:, None] > deg[None],
            rank[:, None] > rank[None])


class _MADE(nn.Module):
    """A masked autoencoder for distribution estimation: 64 → 200 (ReLU) → 64 through masked
    linear maps (_made_masks), plus a masked linear path straight from the pixels (no bias):
    output d, the logit of pixel d's probability given the pixels before it in the order.
    forward(x): the logits (n, 64). 29,960 parameters (2,016 of the direct path's 4,096 used)."""

    def __init__(self):
        super().__init__()
        _, m_in, m_out, m_direct = _made_masks()
        self.hidden = _MaskedLinear(64, _MADE_HIDDEN, m_in)
        self.out = _MaskedLinear(_MADE_HIDDEN, 64, m_out)
        self.direct = _MaskedLinear(64, 64, m_direct)
        self.direct.bias = None

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x))) + self.direct(x)


def digits_made(seed: int) -> Task:
    """A MADE (masked autoregressive MLP) fitted by maximum likelihood to binary 8×8 images drawn
    from a fixed mixture of 32 Bernoulli products (training digits with pixels flipped at 5 %),
    batch 32, 1 epoch (300 steps). Train loss: the negative log-likelihood per pixel, the binary
    cross-entropy of each pixel to its logit averaged over the 64 and the images (the teacher's
    entropy per pixel, 0.2526 nats, is the floor). Test metric: the same on the test images."""
    torch.manual_seed(seed)
    return _array_task("digits_made", _MADE(), _made_data()[:4], seed, batch=32, epochs=1,
                       loss=_bce, full_loss=_eval_bce, metric=("test_nll", _eval_bce))


_HINGE_FEATURES, _HINGE_WIDTH, _HINGE_LAMBDA, _HINGE_NOISE = 512, 2.0, 1e-4, 0.2


@functools.lru_cache(maxsize=1)
def _hinge_data():
    """The digits (_digits) mapped to 512 random Fourier features of an RBF kernel of width 2
    (Rahimi and Recht 2007; the digits' median distance is 3.1): z(x) = √(2/512) cos(xΩ + b),
    Ω (64, 512) N(0, 1/2²), b U(0, 2π), in float64, rounded to float32; 20 % of the training
    labels (by a uniform below 0.2) replaced by uniform ones (possibly the same), so no linear map
    fits them all; the test labels clean. One fixed seed. Z (n, 512, float32); y (n,, long); the
    same 1200 training and 597 test digits."""
    Xtr, ytr, Xte, yte = _digits()
    g = torch.Generator().manual_seed(2072)
    W = torch.randn(64, _HINGE_FEATURES, generator=g, dtype=torch.float64) / _HINGE_WIDTH
    b = 2 * math.pi * torch.rand(_HINGE_FEATURES, generator=g, dtype=torch.float64)
    flip = torch.rand(len(ytr), generator=g) < _HINGE_NOISE
    noisy = torch.where(flip, torch.randint(0, 10, ytr.shape, generator=g), ytr)

    def z(X):
        return (math.sqrt(2 / _HINGE_FEATURES) * torch.cos(X.double() @ W + b)).float()

    return z(Xtr), noisy, z(Xte), yte


def _hinge(scores, y):
    """One-vs-rest multiclass hinge loss: the mean over points i and classes k of
    max(0, 1 − s_ik f_k(x_i)), s_ik = +1 for i's class and −1 for the nine others."""
    s = 2 * F.one_hot(y, scores.shape[1]).to(scores.dtype) - 1
    return torch.relu(1 - s * scores).mean()


# The hinge loss plus (λ/2) ‖W‖², λ = 0.0001.
_hinge_loss, _eval_hinge = _loss_and_full(
    _hinge, penalty=lambda weights: 0.5 * _HINGE_LAMBDA * sum((W * W).sum() for W in weights))


def hinge_svm(seed: int) -> Task:
    """A linear multiclass SVM (one-vs-rest hinge loss, L2 penalty 0.0001, no bias) on 512 random
    Fourier features of the digits, 20 % of the training labels random, batch 32, 6 epochs (222
    steps). Train loss: the penalised hinge objective, convex and not smooth (its optimum on the
    training points, 0.12287 by dual coordinate ascent, is the floor). Test metric: the accuracy
    of the argmax on the clean test labels."""
    torch.manual_seed(seed)

    return _array_task("hinge_svm", nn.Linear(_HINGE_FEATURES, 10, bias=False), _hinge_data(),
                       seed, batch=32, epochs=6, loss=_hinge_loss, full_loss=_eval_hinge)


# ---------------------------------------------------------------------------------------------
# Held out of round 38: two more kinds of task not in the selection (a graph attention network,
# whose every edge's weight is a softmax over the receiving node's edges of a learned score of
# both ends, where graph_gcn's are fixed; a convolutional encoder-decoder denoiser, a strided
# convolution down, a transposed one back up and a skip connection across), each with a floor:
# the teacher's entropy per training node, 0.704448 nats (exact; by Gibbs's inequality no model's
# expected cross-entropy to the teacher's draws is lower; the teacher reads 0.71091 on the drawn
# training labels); the Wiener filter's expected error per pixel, 0.0368673 (exact: for Gaussian
# images and noise the conditional mean is that linear filter, its error Σ_k λ_k σ²/(λ_k + σ²)
# over the covariance's eigenvalues; it reads 0.036913 on the training pairs, each seen once).
# Neither is a hard bound on the finite training set (a model could fit the draws' own noise),
# but the GAT's 252 parameters against 1500 labels and the denoiser's single pass keep any run
# far from it and far above FLOOR. Budgets fixed from plain runs at seeds 0 and 1 before any QLAB
# run (the baselines suite; no QLAB or peer run on either).
# graph_gat, 10 epochs (300 steps): Adam 0.8758 (lr 0.01), heavy ball 1.0231 (lr 0.1), SGD 1.0531
# (lr 1, the grid's largest), from 1.39 (seed 1: 0.9650, 1.0088 and 1.1730, the same lrs); the
# best ends 24 % above the floor (37 % at seed 1), still falling: Adam at lr 0.01 read 1.0375 at 6
# epochs and 0.7934 (13 % above, test NLL 0.904: the labels' noise partly fitted) at 20, where a
# run takes 5–6 s. Heavy ball at lr 1 diverges (8.5–10.5).
# conv_denoiser, 1 epoch of 9600 pairs (300 steps): Adam 0.04380 (lr 0.001), heavy ball 0.04920
# (lr 0.1), SGD 0.05650 (lr 0.1), from 0.213 (seed 1: 0.04339, 0.04970 and 0.05700, the same
# lrs); the best ends 19 % above the floor (18 % at seed 1), still falling: Adam at lr 0.001 read
# 0.0406 (10 % above) after 4 epochs (1200 steps; lr 0.003 the same). The mean image alone reads
# 0.0736, the noisy input 0.250. Every base diverges at lr 1. One plain run takes 2.0–3.6 s
# (graph_gat: the whole graph through each step) and 1.0–1.6 s (conv_denoiser) on one thread
# here, beside another job.
# ---------------------------------------------------------------------------------------------
_GAT_NODES, _GAT_TRAIN, _GAT_EDGES, _GAT_CLASSES = 2000, 1500, 6000, 4


class _GAT(nn.Module):
    """Two graph attention layers (Veličković et al. 2018) over a fixed graph (edges src → dst,
    each node's self-loop among them) on fixed node features X (n, 8): 8 → 2 heads of 8 (ELU) →
    4 logits (one head). A layer maps h to Wh, scores each edge e_ij = LeakyReLU_0.2(a_srcᵀ Wh_j
    + a_dstᵀ Wh_i) for j → i, and sums Wh_j over i's edges weighted by the softmax of the scores
    over them, plus a bias. forward(idx): the logits of the nodes idx. 252 parameters."""

    def __init__(self, src, dst, X, hidden=8, heads=2):
        super().__init__()
        self.register_buffer("src", src)
        self.register_buffer("dst", dst)
        self.register_buffer("X", X)
        self.w1 = nn.Linear(X.shape[1], heads * hidden, bias=False)
        self.a1 = nn.Parameter(0.3 * torch.randn(2, heads, hidden))  # [a_src, a_dst] per head
        self.b1 = nn.Parameter(torch.zeros(heads * hidden))
        self.w2 = nn.Linear(heads * hidden, _GAT_CLASSES, bias=False)
        self.a2 = nn.Parameter(0.3 * torch.randn(2, 1, _GAT_CLASSES))
        self.b2 = nn.Parameter(torch.zeros(_GAT_CLASSES))

    def attend(self, h, a):
        """h (n, heads, f) → (n, heads, f): each node's softmax-weighted sum over its edges."""
        e = F.leaky_relu((h * a[0]).sum(-1)[self.src] + (h * a[1]).sum(-1)[self.dst], 0.2)
        with torch.no_grad():  # the softmax is the same for any shift per node: the largest
            top = torch.full_like(h[..., 0], -math.inf).scatter_reduce(
                0, self.dst[:, None].expand_as(e), e, "amax")
        w = torch.exp(e - top[self.dst])
        alpha = w / torch.zeros_like(top).index_add(0, self.dst, w)[self.dst]
        return torch.zeros_like(h).index_add(0, self.dst, alpha[..., None] * h[self.src])

    def forward(self, idx):
        n = len(self.X)
        h = F.elu(self.attend(self.w1(self.X).view(n, self.a1.shape[1], -1), self.a1)
                  .reshape(n, -1) + self.b1)
        return (self.attend(self.w2(h)[:, None], self.a2)[:, 0] + self.b2)[idx]


@functools.lru_cache(maxsize=1)
def _gat_graph():
    """A random graph and a teacher GAT's labels, one fixed seed: 6000 node pairs uniform over
    the 2000 nodes (the pairs of a node with itself and repeats dropped; each pair an edge both
    ways), every node's self-loop; features N(0, I₈); a teacher _GAT with weights N(0, 1) (w1's
    over √8), the attention vectors N(0, 3²) (peaked weights), b1 0 and b2 minus the logits' mean
    over the nodes; each label drawn from the softmax of its logits. (src, dst, X, labels, the
    teacher's class probabilities (n, 4, float64), and a 1500/500 split)"""
    g = torch.Generator().manual_seed(2077)
    n = _GAT_NODES
    pairs = torch.randint(0, n, (_GAT_EDGES, 2), generator=g)
    pairs = torch.unique(pairs[pairs[:, 0] != pairs[:, 1]].sort(1).values, dim=0)
    loops = torch.arange(n)
    src = torch.cat([pairs[:, 0], pairs[:, 1], loops])
    dst = torch.cat([pairs[:, 1], pairs[:, 0], loops])
    X = torch.randn(n, 8, generator=g)
    teacher = _GAT(src, dst, X).double()
    with torch.no_grad():
        for p, scale in ((teacher.w1.weight, 8 ** -0.5), (teacher.a1, 3.0),
                         (teacher.w2.weight, 1.0), (teacher.a2, 3.0)):
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
        teacher.b2.copy_(-teacher(loops).mean(0))  # no class far more frequent than the others
        probs = torch.softmax(teacher(loops), -1)
    labels = torch.multinomial(probs, 1, generator=g)[:, 0]
    perm = torch.randperm(n, generator=g)
    return src, dst, X, labels, probs, perm[:_GAT_TRAIN], perm[_GAT_TRAIN:]


def _gat_floor():
    """The teacher's entropy averaged over the training nodes: by Gibbs's inequality no model's
    expected cross-entropy to labels drawn from the teacher is lower."""
    _, _, _, _, probs, tr, _ = _gat_graph()
    p = probs[tr]
    return float(-(p * p.log()).sum(-1).mean())


def graph_gat(seed: int) -> Task:
    """A two-layer graph attention network (2 heads of 8, then 4 logits) classifying the nodes of
    a fixed random graph (2000 nodes, about 6 edges each) whose labels a teacher GAT drew from its
    softmax, batch 50 training nodes, 10 epochs (300 steps), the whole graph through every
    forward. Train loss: the cross-entropy on the 1500 training nodes (the teacher's entropy on
    them, 0.7044 nats, is the floor). Test metric: the same on the 500 test nodes."""
    src, dst, X, labels, _, tr, te = _gat_graph()
    torch.manual_seed(seed)
    return _array_task("graph_gat", _GAT(src, dst, X), (tr, labels[tr], te, labels[te]), seed,
                       batch=50, epochs=10, metric=("test_nll", _eval_ce))


_DEN_NOISE, _DEN_TRAIN = 0.5, 9600


@functools.lru_cache(maxsize=1)
def _denoise_data():
    """Images x ~ N(μ, Σ), μ and Σ the training digits' (_digits) mean and covariance: x = μ +
    Dᵀz/√1199, D the 1200 centred digits, z ~ N(0, I₁₂₀₀); the input x + N(0, 0.5² I₆₄), the
    target x. One fixed seed, in float64, rounded to float32: 9600 training pairs (one epoch:
    each seen once, so the noise cannot be memorised) and 2000 test ones. X, y (n, 1, 8, 8)."""
    Xd = _digits()[0].double()
    mu, D = Xd.mean(0), Xd - Xd.mean(0)
    g = torch.Generator().manual_seed(2078)
    n = _DEN_TRAIN + 2000
    z = torch.randn(n, len(D), generator=g, dtype=torch.float64)
    clean = mu + z @ D / math.sqrt(len(D) - 1)  # covariance DᵀD/1199, the digits' own
    noisy = clean + _DEN_NOISE * torch.randn(n, 64, generator=g, dtype=torch.float64)
    X, y = noisy.float().view(n, 1, 8, 8), clean.float().view(n, 1, 8, 8)
    return X[:_DEN_TRAIN], y[:_DEN_TRAIN], X[_DEN_TRAIN:], y[_DEN_TRAIN:]


def _denoise_floor():
    """The least expected squared error per pixel of any estimate of x from x + N(0, σ²I): for a
    Gaussian x the conditional mean is the Wiener filter's, μ + Σ(Σ + σ²I)⁻¹(x̃ − μ), its error
    covariance Σ − Σ(Σ + σ²I)⁻¹Σ, whose trace is Σ_k λ_k σ² / (λ_k + σ²) over Σ's eigenvalues."""
    Xd = _digits()[0].double()
    lam = torch.linalg.eigvalsh(torch.cov(Xd.T)).clamp_min(0)
    return float((lam * _DEN_NOISE ** 2 / (lam + _DEN_NOISE ** 2)).sum() / 64)


class _ConvDenoiser(nn.Module):
    """A small convolutional encoder-decoder: 3×3 convolution 1 → 16 (ReLU) at 8×8, a strided 3×3
    convolution 16 → 32 (ReLU) to 4×4, a transposed 4×4 convolution (stride 2) 32 → 16 (ReLU)
    back to 8×8, and a 3×3 convolution of it beside the first layer's maps (the skip connection,
    concatenated) to one channel. 13,297 parameters."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.out = nn.Conv2d(32, 1, 3, padding=1)

    def forward(self, x):
        skip = torch.relu(self.enc(x))
        u = torch.relu(self.up(torch.relu(self.down(skip))))
        return self.out(torch.cat([u, skip], 1))


def conv_denoiser(seed: int) -> Task:
    """A convolutional encoder-decoder (a strided convolution down, a transposed one up, a skip
    connection) denoising 8×8 Gaussian images with the digits' mean and covariance from their
    sum with N(0, 0.5²) noise, batch 32, 1 epoch (300 steps). Train loss: the MSE per pixel to
    the clean image (the Wiener filter's expected error, 0.03687, is the floor). Test metric: the
    same on the test pairs."""
    torch.manual_seed(seed)
    return _array_task("conv_denoiser", _ConvDenoiser(), _denoise_data(), seed, batch=32,
                       epochs=1, loss=_mse, full_loss=_eval_mse, metric=("test_mse", _eval_mse))


# ---------------------------------------------------------------------------------------------
# Held out of round 42: two more kinds of task not in the selection (real phase retrieval: one
# signal vector fitted to the squares of its noisy Gaussian measurements, a quartic, nonconvex
# loss whose minimisers come in a ± pair and whose random start lies near the saddles orthogonal
# to the signal; a bidirectional transformer trained as a masked language model, each masked
# token predicted from the visible ones on both sides, where char_transformer's attention is
# causal and seq2seq_reverse's decoder is taught by teacher forcing), each with a floor: the
# intensities' noise variance, 0.25 (exact: for any x, E(y − (aᵀx)²)² = E((aᵀx*)² − (aᵀx)²)² +
# σ², which for a ~ N(0, I) and ‖x*‖ = 1 is 3‖x‖⁴ + 3 − 2‖x‖² − 4(xᵀx*)² + σ²; x* reads 0.24534
# on the training measurements); the masked tokens' posterior entropy given the visible ones,
# 0.991807 nats (exact, by the chain's forward-backward recursions; by Gibbs's inequality no
# prediction from the visible tokens has a lower expected cross-entropy; the posterior reads
# 0.99083 on the drawn training tokens). Neither is a hard bound on the finite training set (a
# fit could follow the draws' own noise: phase retrieval's least-squares fit by about σ²·128/9600
# ≈ 0.003), but one pass over fresh draws keeps every run far from it and far above FLOOR.
# Budgets fixed from plain runs at seeds 0 and 1 before any QLAB run (the baselines suite; no
# QLAB or peer run on either).
# phase_retrieval, 1 epoch of 9600 measurements (300 steps): heavy ball 0.3062 (lr 0.001), Adam
# 0.3217 (lr 0.01), SGD 0.3408 (lr 0.01), from 4.49 (seed 1: 0.3187, 0.3838 and 0.3253, the same
# lrs, from 4.07); the best ends 22 % above the floor (27 % at seed 1), held there by its steps'
# noise, not still falling: at 2 and 4 epochs the same lrs read 0.30–0.49. Every run first
# crosses the saddles' plateau (2.92 at ‖x‖² = 1/3, x ⟂ x*; the runs at lr 0.001 other than heavy
# ball's still read 2.73–2.80 at 300 steps). Between the grid's lrs a run escapes later and then
# ends nearer: heavy ball at lr 0.0003 and SGD and Adam at 0.003 read 0.40–2.66 at 300 steps and
# 0.251–0.255 (0.5–2 % above) at 2 epochs. SGD diverges at lr 0.1 and 1, heavy ball from lr
# 0.01; Adam at lr 1 ends at 4.4–8.6.
# markov_mlm, 1 epoch of 9600 sequences (300 steps): Adam 1.1335 (lr 0.01), heavy ball 1.8703 (lr
# 0.1), SGD 1.8864 (lr 1, the grid's largest), from 2.27 (seed 1: 1.2256, 1.8920 and 1.8859, the
# same lrs, from 2.23); the best ends 14 % above the floor (24 % at seed 1), still falling: at 2
# epochs (600 steps, each sequence seen twice) Adam reads 1.087–1.088 at lr 0.01 and 1.034–1.060
# (4–7 % above) at 0.003. SGD and heavy ball sit through the budget on the plateau of π's
# entropy (1.933: the tokens' frequencies, no neighbour read) and leave it just after: at 600
# steps they read 1.09–1.23. Reading one side only would give the chain's entropy rate, 1.313.
# Heavy ball diverges at lr 1; Adam at lr 0.1 and 1 stays on the plateau (1.94–2.03). One plain
# run takes 0.06–0.08 s (phase_retrieval) and 1.2–2.2 s (markov_mlm) on one thread here, the
# machine's two cores shared.
# ---------------------------------------------------------------------------------------------
_PR_DIM, _PR_TRAIN, _PR_NOISE = 128, 9600, 0.5


@functools.lru_cache(maxsize=1)
def _phase_data():
    """Real phase retrieval: a signal x* uniform on the unit sphere of R¹²⁸, Gaussian measurement
    vectors a ~ N(0, I₁₂₈) rounded to float32, and the intensities y = (aᵀx*)² + N(0, 0.5²) (in
    float64 from the rounded a, then rounded). One fixed seed, 9600 training measurements (one
    epoch: each seen once) and 2000 test ones. A (n, 128), y (n,); the test targets are the
    noise-free intensities (aᵀx*)², and x* (float64) last."""
    g = torch.Generator().manual_seed(2079)
    n = _PR_TRAIN + 2000
    signal = torch.randn(_PR_DIM, generator=g, dtype=torch.float64)
    signal = signal / signal.norm()
    A = torch.randn(n, _PR_DIM, generator=g, dtype=torch.float64).float()
    clean = (A.double() @ signal) ** 2
    y = (clean + _PR_NOISE * torch.randn(n, generator=g, dtype=torch.float64)).float()
    return A[:_PR_TRAIN], y[:_PR_TRAIN], A[_PR_TRAIN:], clean[_PR_TRAIN:].float(), signal


def _phase_floor():
    """The noise's variance: for any x, E(y − (aᵀx)²)² = E((aᵀx*)² − (aᵀx)²)² + σ² ≥ σ², the
    noise being independent of a, with equality only at x = ±x*."""
    return _PR_NOISE ** 2


class _PhaseRetrieval(nn.Module):
    """The signal's estimate x (128,), started N(0, I/128) from the seed (its norm about 1, nearly
    orthogonal to x*): forward(A) = (Ax)², the predicted intensities. 128 parameters."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.randn(_PR_DIM) / math.sqrt(_PR_DIM))

    def forward(self, a):
        return (a @ self.x) ** 2


def phase_retrieval(seed: int) -> Task:
    """Real phase retrieval: a vector x ∈ R¹²⁸ fitted by the squared error of (aᵀx)² to noisy
    intensities (aᵀx*)² + N(0, 0.5²) of Gaussian measurements, batch 32, 1 epoch (300 steps).
    Train loss: the MSE on the 9600 training measurements (the noise's variance, 0.25, is the
    floor). Test metric: the MSE to the noise-free intensities of the 2000 test measurements (0
    only at x = ±x*)."""
    torch.manual_seed(seed)
    return _array_task("phase_retrieval", _PhaseRetrieval(), _phase_data()[:4], seed, batch=32,
                       epochs=1, loss=_mse, full_loss=_eval_mse,
                       metric=("test_clean_mse", _eval_mse))


_MLM_VOCAB, _MLM_LEN, _MLM_MASKS, _MLM_TRAIN = 8, 20, 4, 9600
_MLM_MASK, _MLM_IGNORE = _MLM_VOCAB, -100  # the mask token, the embedding's last row; no target


def _stationary(P):
    """The stationary distribution π of the chain P (πP = π, Σπ = 1), in P's dtype."""
    M = P.T - torch.eye(len(P), dtype=P.dtype)
    M[-1] = 1  # one balance equation is redundant: the sum's constraint in its place
    return torch.linalg.solve(M, torch.eye(len(P), dtype=P.dtype)[-1])


@functools.lru_cache(maxsize=1)
def _mlm_data():
    """A random Markov chain on 8 tokens, each row of its transition matrix P the softmax of
    2·N(0, I₈), and sequences of 20 tokens from it started from its stationary π (so stationary
    throughout), each with 4 positions masked, uniform without replacement. One fixed seed: 9600
    training sequences (one epoch: each seen once, so the draws cannot be memorised) and 1000
    test ones. X (n, 20, long): the sequence, its masked tokens replaced by the mask token 8; y
    (n, 20, long): the masked tokens, −100 (no target) elsewhere; and P, π (float64) last."""
    g = torch.Generator().manual_seed(2080)
    V, T, n = _MLM_VOCAB, _MLM_LEN, _MLM_TRAIN + 1000
    P = torch.softmax(2 * torch.randn(V, V, generator=g, dtype=torch.float64), 1)
    pi = _stationary(P)
    seq = torch.empty(n, T, dtype=torch.long)
    seq[:, 0] = torch.multinomial(pi, n, replacement=True, generator=g)
    for t in range(1, T):
        seq[:, t] = torch.multinomial(P[seq[:, t - 1]], 1, generator=g)[:, 0]
    masked = torch.zeros(n, T, dtype=torch.bool)
    masked.scatter_(1, torch.rand(n, T, generator=g).argsort(1)[:, :_MLM_MASKS], True)
    X, y = torch.where(masked, _MLM_MASK, seq), torch.where(masked, seq, _MLM_IGNORE)
    return X[:_MLM_TRAIN], y[:_MLM_TRAIN], X[_MLM_TRAIN:], y[_MLM_TRAIN:], P, pi


def _mlm_posterior(X, P, pi):
    """Each position's token's distribution given the sequence's visible tokens, exactly, by the
    forward-backward recursions over the chain (each step renormalised; a visible position's is
    its token's indicator). X (n, 20, long) → (n, 20, 8) float64."""
    n, T = X.shape
    seen = F.one_hot(X.clamp_max(_MLM_VOCAB - 1), _MLM_VOCAB).double()
    ev = torch.where((X == _MLM_MASK)[..., None], torch.ones_like(seen), seen)
    fwd, bwd = torch.empty_like(ev), torch.ones_like(ev)
    fwd[:, 0] = pi * ev[:, 0]
    for t in range(1, T):
        f = (fwd[:, t - 1] @ P) * ev[:, t]
        fwd[:, t] = f / f.sum(1, keepdim=True)
    for t in range(T - 2, -1, -1):
        b = (ev[:, t + 1] * bwd[:, t + 1]) @ P.T
        bwd[:, t] = b / b.sum(1, keepdim=True)
    post = fwd * bwd
    return post / post.sum(-1, keepdim=True)


def _mlm_floor():
    """The masked tokens' posterior entropy given the visible ones, averaged over the training
    sequences' masked positions: by Gibbs's inequality no prediction from the visible tokens has a
    lower expected cross-entropy to the chain's draws."""
    X, _, _, _, P, pi = _mlm_data()
    post = _mlm_posterior(X, P, pi)[X == _MLM_MASK]
    return float(-(post * post.log()).sum(-1).mean())


class _MaskedLM(nn.Module):
    """A bidirectional (unmasked-attention) pre-norm transformer, d 32, 2 heads, 2 blocks
    (self-attention, GELU MLP): token embeddings (the mask token's the last row) plus learned
    positions N(0, 1), a final LayerNorm and a linear head: the logits (n, 20, 8) of every
    position's token. 26,664 parameters."""

    def __init__(self, d=32, heads=2, blocks=2):
        super().__init__()
        self.tok = nn.Embedding(_MLM_VOCAB + 1, d)
        self.pos = nn.Parameter(torch.randn(_MLM_LEN, d))
        self.ln1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(blocks))
        self.attn = nn.ModuleList(_Attention(d, heads) for _ in range(blocks))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(blocks))
        self.mlp = nn.ModuleList(_gelu_mlp(d) for _ in range(blocks))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, _MLM_VOCAB)

    def forward(self, x):
        h = self.tok(x) + self.pos
        for ln1, attn, ln2, mlp in zip(self.ln1, self.attn, self.ln2, self.mlp):
            z = ln1(h)
            h = h + attn(z, z)
            h = h + mlp(ln2(h))
        return self.head(self.ln(h))


def _masked_ce(logits, y):
    """The cross-entropy per masked token (the positions whose target is −100 left out)."""
    return F.cross_entropy(logits.reshape(-1, _MLM_VOCAB), y.reshape(-1),
                           ignore_index=_MLM_IGNORE)


def markov_mlm(seed: int) -> Task:
    """A bidirectional transformer (2 pre-norm blocks, d 32, 2 heads) predicting the 4 masked
    tokens of each 20-token sequence of a random 8-token Markov chain from the others (a masked
    language model), batch 32, 1 epoch (300 steps). Train loss: the cross-entropy per masked
    token on the 9600 training sequences (the masked tokens' exact posterior entropy given the
    visible ones, 0.9918 nats, is the floor). Test metric: the same on the 1000 test
    sequences."""
    torch.manual_seed(seed)
    loss, full = _loss_and_full(_masked_ce)
    return _array_task("markov_mlm", _MaskedLM(), _mlm_data()[:4], seed, batch=32, epochs=1,
                       loss=loss, full_loss=full, metric=("test_nll", full))


TASKS = {f.__name__: f for f in (digits_mlp, digits_cnn, convex_softmax, char_transformer,
                                 friedman_mlp, synth_mlp, char_gru, moons_resmlp, bn_dropout_mlp,
                                 waves_cnn1d, digits_autoencoder, tabular_embed, digits_vit,
                                 counts_poisson, ratings_mf, graph_gcn, char_transformer_3x,
                                 friedman_mlp_3x, waves_cnn1d_3x, digits_cnn_3x, tabular_embed_3x,
                                 counts_poisson_3x, synth_mlp_3x, bn_dropout_mlp_3x, ratings_mf_3x,
                                 digits_vit_3x, digits_autoencoder_3x, moons_resmlp_3x, char_gru_3x,
                                 graph_gcn_3x, friedman_quantile, digits_lstm, friedman_quantile_3x,
                                 digits_lstm_2x, friedman3_huber, digits_multilabel, char_lstm,
                                 topics_bag, char_lstm_3x, sine_field,
                                 digits_deep_tanh, digits_moe, deep_linear,
                                 clicks_fm, digits_contrastive, skipgram_ns, adding_rnn,
                                 digits_distill, pinn_poisson, focal_unequal,
                                 digits_vae, ctc_frames, ring_flow, wave_mdn,
                                 ring_score, ordinal_latent, cox_survival, set_deepsets,
                                 rank_listnet, lista_sparse, ssm_recall, tcn_forecast,
                                 node_spiral, mil_bags, crf_tagger, nam_additive,
                                 soft_trees, kg_distmult, lora_adapt, tpp_rmtpp,
                                 hypernet_curves, lasso_logistic, sparse_gp, multitask_heads,
                                 seq2seq_reverse, gmm_density, digits_made, hinge_svm,
                                 graph_gat, conv_denoiser, phase_retrieval, markov_mlm)}
# Not used by the choice of defaults (docs/quality.md reports them beside the headline, not in it):
# char_gru (held out of round 2; seen while round 3 was prototyped), moons_resmlp (held out of round
# 3; seen afterwards), digits_autoencoder (held out of round 4); all three were run as a check on the
# round-5 candidates before that choice. graph_gcn was fixed from plain runs before round 8's
# choice and its QLAB runs made once, after it. bn_dropout_mlp, waves_cnn1d, tabular_embed,
# digits_vit, counts_poisson and ratings_mf, held out of rounds 3–7 (counts_poisson after round 6),
# are selection tasks of rounds 4–8; the 3× tasks held out of rounds 9, 10 and 11 are selection
# tasks from the round after, and so are round 12's from round 13, round 13's from round 14,
# round 14's (two new kinds of task, at 1×) from round 15, round 15's (the same at longer
# budgets) from round 16, round 16's (a Huber loss, several sigmoid outputs) from round 17, round
# 17's (an LSTM language model, a bag of sparse embeddings) from round 18, round 18's (the LSTM
# language model at 3×) from round 19, round 19's (sine activations, a deep tanh net) from round 20,
# round 20's (a mixture of experts, a deep linear net, a factorization machine) from round 21,
# round 21's (a contrastive loss, skip-gram embeddings) from round 22 and round 22's (a gateless
# RNN on the adding problem, distillation by KL) from round 23, and round 23's (a physics-informed
# net, the focal loss on unequal classes) from round 24, and round 24's (a variational autoencoder,
# CTC) from round 25, and round 25's (a normalizing flow, a mixture density network) from round 26,
# and round 26's (a score model, an ordinal regression) from round 27, and round 27's (a Cox
# survival model, a DeepSets regressor) from round 28, and round 28's (a ranking model, LISTA)
# from round 29, and round 29's (a state-space model, a causal convolutional forecaster) from
# round 30, and round 30's (a neural ODE, attention-pooled bags) from round 31, and round 31's (a
# CRF tagger, a neural additive model) from round 32, and round 32's (soft decision trees,
# knowledge-graph embeddings) from round 33, and round 33's (LoRA adapters, a recurrent temporal
# point process) from round 34, and round 34's (a hypernetwork, L1-penalised logistic regression)
# from round 35, and round 35's (a sparse variational GP, a multi-task net with two heads) from
# round 36, and round 36's (an encoder-decoder transformer, a Gaussian mixture by direct maximum
# likelihood) from round 37, and round 37's (a masked autoregressive MLP, a linear SVM by the hinge
# loss) from round 38, and round 38's (a graph attention network, a convolutional encoder-decoder
# denoiser) from round 39, and round 42's (real phase retrieval, a bidirectional transformer
# trained as a masked language model) from round 43.
HELD_OUT = {"char_gru": "not in the choice", "moons_resmlp": "not in the choice",
            "digits_autoencoder": "not in the choice", "graph_gcn": "held out of round 8"}
# The loss floor (issue 3: no method may drive the train loss below ~0.01, or ratios compare
# memorised fits). Since round 12 a task where any run of any method (plain, QLAB or peer, main
# suite, seeds 0–2) ends below FLOOR is reported, but counts neither in the choice nor in the
# headline. Fixed before round 12's choice, from the stored runs; `floor_breaches` re-checks it.
# digits_lstm_2x (held out of round 15) was found below it when it was to join the selection in
# round 16, before any run of that round.
FLOOR = 0.01
BELOW_FLOOR = {"digits_cnn_3x": "Schedule-Free SGD and D-Adapt Adam end at 0.009 (mean 0.017)",
               "synth_mlp_3x": "Schedule-Free SGD ends at 0.009 (mean 0.011): flipped labels memorised",
               "digits_lstm_2x": "Prodigy ends at 0.003 and 0.009 (mean 0.017)"}
SELECTION = tuple(t for t in TASKS if t not in HELD_OUT and t not in BELOW_FLOOR)  # the choice's tasks


def floor_breaches(runs) -> dict:
    """{task: lowest final train loss} of the tasks where some run ends below FLOOR."""
    low = {}
    for r in runs:
        v = r.get("final_train_loss")
        if v is not None and math.isfinite(v) and v < FLOOR and v < low.get(r["task"], math.inf):
            low[r["task"]] = v
    return low
