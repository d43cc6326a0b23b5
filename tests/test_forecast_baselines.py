"""insarlake.forecast.baselines: classical forecasts against hand-computed values; the neural baselines'
interface (shapes, masked loss, determinism, build), closed forms (KL, a linear latent ODE), learning a
synthetic trend field below persistence, and the graph baseline's use of its neighbours."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from insarlake.forecast import CLASSICAL_MODELS, NEURAL_MODELS, RECORD_MODELS
from insarlake.forecast import baselines as bl
from insarlake.forecast.batch import GraphBatch

EPOCH = bl.EPOCH_YEARS
L, H = 12, 4
NX, NY = 10, 20                     # the synthetic scene: a 10 x 20 grid of pixels, 4-neighbour graph


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: tiny models gain nothing from more, and a busy machine makes them spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------- classical
T_IN = np.array([-3.0, -2.0, -1.0, 0.0])
T_OUT = np.array([1.0, 2.0])


def test_names_match_the_package():
    assert bl.CLASSICAL == CLASSICAL_MODELS and bl.RECORD_BASELINES == RECORD_MODELS
    assert set(bl.NEURAL) == set(NEURAL_MODELS) - {"dapf"}


def test_linear_trend_extrapolates_a_line_exactly():
    history = np.array([[-6.0, -4.0, -2.0, 0.0],       # slope 2
                        [3.0, 2.0, 1.0, 0.0]])         # slope -1
    np.testing.assert_allclose(bl.linear_trend(history, T_IN, T_OUT), [[2.0, 4.0], [-1.0, -2.0]], atol=1e-12)
    t_in = np.array([-0.5, -0.2, -0.1, 0.0])           # irregular epochs, line 1 + 3 t
    t_out = np.array([0.05, 0.3])
    np.testing.assert_allclose(bl.linear_trend((1 + 3 * t_in)[None], t_in, t_out), [1 + 3 * t_out], atol=1e-12)


def test_classical_hand_computed():
    history = np.array([[-3.0, -1.0, -2.0, 0.0]])
    # t - mean(t) = [-1.5, -.5, .5, 1.5], y - mean(y) = [-1.5, .5, -.5, 1.5]: Sxy = 4, Sxx = 5, slope 0.8,
    # line -1.5 + 0.8 (t + 1.5): 0.5 at t = 1, 1.3 at t = 2
    np.testing.assert_allclose(bl.linear_trend(history, T_IN, T_OUT), [[0.5, 1.3]], atol=1e-12)
    np.testing.assert_allclose(bl.historical_average(history, T_IN, T_OUT), [[-1.5, -1.5]])
    np.testing.assert_array_equal(bl.persistence(history, T_IN, T_OUT), [[0.0, 0.0]])
    # not normalised: persistence repeats the last value
    np.testing.assert_array_equal(bl.persistence(history + 7, T_IN, T_OUT), [[7.0, 7.0]])


def test_classical_shapes_and_dispatch():
    rng = np.random.default_rng(0)
    history = rng.normal(size=(9, 5))
    t_in, t_out = np.arange(-4.0, 1.0) * EPOCH, np.arange(1.0, 4.0) * EPOCH
    for name in bl.CLASSICAL:
        out = bl.classical_forecast(name, history, t_in, t_out)
        assert out.shape == (9, 3)
        np.testing.assert_array_equal(out, getattr(bl, name)(history, t_in, t_out))
    # one input epoch: the line is the constant through it
    np.testing.assert_array_equal(bl.linear_trend(history[:, -1:], t_in[-1:], t_out), np.repeat(history[:, -1:], 3, 1))
    # historical average repeats the window mean
    np.testing.assert_allclose(bl.historical_average(history, t_in, t_out)[:, 2], history.mean(axis=1))


def test_harmonic_trend_continues_a_trend_with_an_annual_cycle_exactly():
    # three years of 12-day epochs; pixel 0: 2 - 5 t + 3 sin 2πt - 1.5 cos 2πt; pixel 1: the same
    # plus 7 mm everywhere (the intercept takes it); pixel 2: plus a step of 4 mm in its last 6 epochs
    t = np.arange(0, 3.0, 12 / 365.25)
    t_out = t[-1] + np.array([12, 24, 36]) / 365.25

    def truth(x):
        return 2 - 5 * x + 3 * np.sin(2 * np.pi * x) - 1.5 * np.cos(2 * np.pi * x)

    step = np.where(np.arange(len(t)) >= len(t) - 6, 4.0, 0.0)
    record = np.stack([truth(t), truth(t) + 7.0, truth(t) + step])
    out = bl.harmonic_trend(record, t, t_out, 6)
    np.testing.assert_allclose(out[0], truth(t_out), atol=1e-9)
    np.testing.assert_allclose(out[1], truth(t_out) + 7.0, atol=1e-9)
    # least squares is linear in the record: the step's forecast adds to the model's
    np.testing.assert_allclose(out[2], truth(t_out) + bl.harmonic_trend(step[None], t, t_out, 6)[0], atol=1e-9)
    # the window's mean residual carries the step forward: its forecast is closer to +4 than the fit alone
    fit_alone = bl.harmonic_trend(step[None], t, t_out, len(t))[0]
    assert np.all(np.abs(bl.harmonic_trend(step[None], t, t_out, 6)[0] - 4.0) < np.abs(fit_alone - 4.0))
    # a window of every epoch: the mean residual of a least-squares fit with an intercept is 0
    fit = bl.harmonic_trend(record, t, t_out, len(t))
    X = bl.harmonic_design(t)
    coef = np.linalg.solve(X.T @ X, X.T @ record[2])
    np.testing.assert_allclose(fit[2], bl.harmonic_design(t_out) @ coef, atol=1e-9)


def test_harmonic_fit_within_the_record_and_the_trend_alone_before_a_year():
    """harmonic_fit is harmonic_trend at any times: inside the record it is the least-squares fit
    (plus the window's mean residual); over less than a year of record the sinusoid is left out and
    the fit is the least-squares line (a sinusoid fitted on 8 months swings: here by tens of mm)."""
    t = np.arange(0, 2.0, 12 / 365.25)
    rng = np.random.default_rng(0)
    record = 1.5 - 4 * t + 2 * np.sin(2 * np.pi * t + 0.3) + rng.normal(0, 0.5, (3, len(t)))
    X = bl.harmonic_design(t)
    coef = np.linalg.solve(X.T @ X, X.T @ record.T)                       # (4, 3) normal equations
    inside = bl.harmonic_fit(record, t, t[5:40], len(t))
    np.testing.assert_allclose(inside, (X[5:40] @ coef).T, atol=1e-9)
    t_out = t[-1] + np.array([12, 24]) / 365.25
    np.testing.assert_allclose(bl.harmonic_fit(record, t, t_out, 6), bl.harmonic_trend(record, t, t_out, 6), atol=0)
    short = t < 0.7                                                       # 8 months: the line alone
    line = np.polynomial.polynomial.polyfit(t[short], record[:, short].T, 1)   # (2, 3)
    t_next = t[short][-1] + np.array([12, 24]) / 365.25
    expected = line[0][:, None] + line[1][:, None] * t_next
    np.testing.assert_allclose(bl.harmonic_trend(record[:, short], t[short], t_next, int(short.sum())), expected,
                               atol=1e-9)
    with_sinusoid = bl.harmonic_fit(record[:, short], t[short], t_next, int(short.sum()), annual=True)
    assert np.abs(with_sinusoid - expected).max() > 1.0
    assert bl.harmonic_design(t, annual=False).shape == (len(t), 2)
    with pytest.raises(ValueError, match="t_eval"):
        bl.harmonic_fit(record, t, np.array([np.nan]), 4)


def test_harmonic_trend_bad_input():
    t = np.arange(8.0) / 10
    with pytest.raises(ValueError, match="window_len"):
        bl.harmonic_trend(np.zeros((2, 8)), t, np.array([1.0]), 9)
    with pytest.raises(ValueError, match="t_out"):
        bl.harmonic_trend(np.zeros((2, 8)), t, np.array([0.5]), 4)
    with pytest.raises(ValueError, match="NaN"):
        bl.harmonic_trend(np.full((2, 8), np.nan), t, np.array([1.0]), 4)


def test_classical_bad_input():
    history = np.zeros((2, 4))
    with pytest.raises(ValueError, match="unknown classical model 'dapf'"):
        bl.classical_forecast("dapf", history, T_IN, T_OUT)
    with pytest.raises(ValueError, match="t_in"):
        bl.linear_trend(history, T_IN[:3], T_OUT)
    with pytest.raises(ValueError, match="t_in must be strictly increasing"):
        bl.linear_trend(history, T_IN[::-1], T_OUT)
    with pytest.raises(ValueError, match="t_out"):
        bl.persistence(history, T_IN, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="history"):
        bl.historical_average(np.full((2, 4), np.nan), T_IN, T_OUT)
    with pytest.raises(ValueError, match="history"):
        bl.historical_average(np.zeros(4), T_IN, T_OUT)


# -------------------------------------------------------------------------------------------- neural
def _times(input_len=L, horizon=H):
    return -EPOCH * torch.arange(input_len - 1, -1, -1.0), EPOCH * torch.arange(1.0, horizon + 1)


def _grid():
    """coords (n, 3) standardised grid positions and random heights; 4-neighbour edge_index (2, E)."""
    yy, xx = torch.meshgrid(torch.arange(float(NY)), torch.arange(float(NX)), indexing="ij")
    idx = torch.arange(NX * NY).reshape(NY, NX)
    a = torch.cat([idx[:, :-1].reshape(-1), idx[:-1, :].reshape(-1)])
    b = torch.cat([idx[:, 1:].reshape(-1), idx[1:, :].reshape(-1)])
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), torch.stack([torch.cat([a, b]), torch.cat([b, a])])


def trend_scene(g: torch.Generator) -> GraphBatch:
    """Linear trends whose slope is a smooth random field over the grid (3 random plane waves): the
    target at H epochs is in [-2, 2], the history reaches back to -slope * 11 epochs."""
    xy, edge_index = _grid()
    field = torch.zeros(NX * NY)
    for _ in range(3):
        k = torch.rand(2, generator=g) * 0.5
        field += torch.sin(xy @ k + 2 * math.pi * torch.rand(1, generator=g))
    slope = field / 3 * 2 / (H * EPOCH)
    coords = torch.cat([xy, torch.randn(NX * NY, 1, generator=g)], 1)
    t_in, t_out = _times()
    return GraphBatch(coords=(coords - coords.mean(0)) / coords.std(0), history=slope[:, None] * t_in, t_in=t_in,
                      t_out=t_out, edge_index=edge_index, target=slope[:, None] * t_out)


def follower_scene(g: torch.Generator, n_pairs: int = 100) -> GraphBatch:
    """Pairs of linked nodes (2i, 2i + 1) sharing one trend: the even node's history shows it, the odd
    node's history is noise (std 0.1); both targets are the trend."""
    n = 2 * n_pairs
    t_in, t_out = _times()
    slope = ((torch.rand(n_pairs, generator=g) * 2 - 1) / (H * EPOCH)).repeat_interleave(2)
    history = slope[:, None] * t_in
    history[1::2] = 0.1 * torch.randn(n_pairs, L, generator=g)
    history[1::2, -1] = 0.0
    i = torch.arange(0, n, 2)
    edge_index = torch.stack([torch.cat([i, i + 1]), torch.cat([i + 1, i])])
    return GraphBatch(coords=torch.randn(n, 3, generator=g), history=history, t_in=t_in, t_out=t_out,
                      edge_index=edge_index, target=slope[:, None] * t_out)


def random_batch(n=30, input_len=L, horizon=H, seed=0) -> GraphBatch:
    g = torch.Generator().manual_seed(seed)
    t_in, t_out = _times(input_len, horizon)
    src, dst = torch.randint(0, n, (2, 3 * n), generator=g)
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    history = torch.randn(n, input_len, generator=g)
    history -= history[:, -1:].clone()
    return GraphBatch(coords=torch.randn(n, 3, generator=g), history=history, t_in=t_in, t_out=t_out,
                      edge_index=edge_index, target=torch.randn(n, horizon, generator=g),
                      mask=torch.rand(n, generator=g) < 0.7)


def _replace(batch: GraphBatch, **fields) -> GraphBatch:
    values = {k: getattr(batch, k) for k in ("coords", "history", "t_in", "t_out", "edge_index", "target", "mask")}
    values.update(fields)
    return GraphBatch(**values)


def _model(name, seed=0, **hyper):
    torch.manual_seed(seed)
    return bl.build(name, L, H, **hyper)


def train(name: str, scene, steps: int = 300, seed: int = 0):
    """Adam (lr 1e-2) on a fresh scene each step, loss / n_nodes; the model in eval mode."""
    model = _model(name, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    noise, data = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 100)
    for _ in range(steps):
        batch = scene(data)
        optimiser.zero_grad()
        loss, _ = model.loss(batch, noise)
        (loss / batch.n_nodes).backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("name", bl.NEURAL)
def test_shapes_finite_loss_and_gradients(name):
    model, batch = _model(name), random_batch()
    out = model(batch)
    assert out.shape == (batch.n_nodes, H) and out.dtype == torch.float32 and torch.isfinite(out).all()
    loss, terms = model.loss(batch, torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert "mse" in terms and all(isinstance(v, float) and math.isfinite(v) for v in terms.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


@pytest.mark.parametrize("name", bl.NEURAL)
def test_loss_is_a_sum_over_masked_nodes(name):
    model, batch = _model(name), random_batch()
    loss = lambda b: model.loss(b, torch.Generator().manual_seed(3))[0].item()  # noqa: E731
    full = loss(batch)
    # targets of masked-out nodes do not matter
    target = batch.target.clone()
    target[~batch.mask] += 100.0
    assert loss(_replace(batch, target=target)) == pytest.approx(full, rel=1e-6)
    # the loss splits over complementary masks (same noise), and the point MSE matches forward
    assert loss(_replace(batch, mask=~batch.mask)) + full == pytest.approx(
        loss(_replace(batch, mask=torch.ones_like(batch.mask))), rel=1e-5)
    if name != "latent_ode":
        with torch.no_grad():
            per_node = ((model(batch) - batch.target) ** 2).mean(1)
        assert full == pytest.approx(per_node[batch.mask].sum().item(), rel=1e-5)
    assert loss(_replace(batch, mask=torch.zeros_like(batch.mask))) == 0.0


@pytest.mark.parametrize("name", bl.NEURAL)
def test_eval_forward_is_deterministic(name):
    model, batch = _model(name).eval(), random_batch()
    with torch.no_grad():
        first = model(batch)
        torch.randn(10)          # moving the global RNG changes nothing
        assert torch.equal(first, model(batch))
    # the same model built with the same seed gives the same forecast
    with torch.no_grad():
        assert torch.equal(first, _model(name).eval()(batch))


def test_gru_nodes_are_independent():
    model, batch = _model("gru"), random_batch()
    history = batch.history.clone()
    history[1:] = 0.0
    with torch.no_grad():
        assert torch.allclose(model(batch)[0], model(_replace(batch, history=history))[0])


def test_build_and_its_checks():
    model = bl.build("gru", L, H, hidden_units=8)
    assert isinstance(model, bl.GruForecaster) and model.gru.hidden_size == 8
    ode = bl.build("latent_ode", L, H)
    assert ode.latent_dim == 16 and ode.encoder.hidden_size == 32 and ode.kl_weight == 1e-3
    assert bl.build("gcn_gru", L, H).hidden_units == 32
    with pytest.raises(ValueError, match="unknown baseline model 'dapf'"):
        bl.build("dapf", L, H)
    with pytest.raises(ValueError, match="'latent_dim'.*'gru'"):
        bl.build("gru", L, H, latent_dim=4)
    with pytest.raises(ValueError, match="hidden_units"):
        bl.build("gcn_gru", L, H, hidden_units=0)
    with pytest.raises(ValueError, match="kl_weight"):
        bl.build("latent_ode", L, H, kl_weight=-1.0)
    with pytest.raises(ValueError, match="L=6"):
        model(random_batch(input_len=6))
    with pytest.raises(ValueError, match="H=2"):
        model(random_batch(horizon=2))
    with pytest.raises(ValueError, match="target"):
        model.loss(_replace(random_batch(), target=None))


@pytest.mark.slow
@pytest.mark.parametrize("name", bl.NEURAL)
def test_learns_a_trend_field_far_below_persistence(name):
    model = train(name, trend_scene)
    test = trend_scene(torch.Generator().manual_seed(12345))
    with torch.no_grad():
        mse = ((model(test) - test.target) ** 2).mean().item()
    persistence_mse = (test.target ** 2).mean().item()       # persistence forecasts 0
    assert mse < 0.1 * persistence_mse, (mse, persistence_mse)


# ----------------------------------------------------------------------------------------- graph GRU
def test_gcn_propagator_matches_dense_normalised_adjacency():
    batch = random_batch(n=12)
    n = batch.n_nodes
    a = torch.zeros(n, n)
    a.index_put_((batch.edge_index[1], batch.edge_index[0]), torch.ones(batch.edge_index.shape[1]), accumulate=True)
    a += torch.eye(n)
    d = a.sum(1).rsqrt()
    dense = d[:, None] * a * d[None, :]
    x = torch.randn(n, 5)
    torch.testing.assert_close(bl.gcn_propagator(batch.edge_index, n)(x), dense @ x)
    with pytest.raises(ValueError, match="edge_index"):
        bl.gcn_propagator(torch.tensor([[0], [n]]), n)


def test_gcn_gru_uses_the_graph():
    model, batch = _model("gcn_gru"), random_batch()
    with torch.no_grad():
        out = model(batch)
        # a different graph changes the forecast; no edges at all changes it too
        assert not torch.allclose(out, model(_replace(batch, edge_index=batch.edge_index[:, : batch.edge_index.shape[1] // 2])))
        isolated = model(_replace(batch, edge_index=torch.zeros(2, 0, dtype=torch.long)))
        assert not torch.allclose(out, isolated)
        # without edges, a node ignores the others' histories
        history = batch.history.clone()
        history[1:] = 0.0
        alone = _replace(batch, edge_index=torch.zeros(2, 0, dtype=torch.long), history=history)
        assert torch.allclose(isolated[0], model(alone)[0])
    # a masked-out neighbour's history still changes the loss of masked nodes
    history = batch.history.clone()
    history[~batch.mask] += 5.0
    assert model.loss(_replace(batch, history=history))[0].item() != pytest.approx(model.loss(batch)[0].item())


@pytest.mark.slow
def test_gcn_gru_beats_gru_on_nodes_led_by_their_neighbours():
    test = follower_scene(torch.Generator().manual_seed(999))
    followers = torch.arange(1, test.n_nodes, 2)
    scores = {}
    for name in ("gru", "gcn_gru"):
        model = train(name, follower_scene, steps=200)
        with torch.no_grad():
            scores[name] = ((model(test) - test.target)[followers] ** 2).mean().item()
    persistence_mse = (test.target[followers] ** 2).mean().item()
    assert scores["gru"] > 0.5 * persistence_mse          # its own noise says nothing of its future
    assert scores["gcn_gru"] < 0.1 * persistence_mse and scores["gcn_gru"] < 0.1 * scores["gru"], scores


# ---------------------------------------------------------------------------------------- latent ODE
def test_kl_closed_form():
    kl = bl.LatentOdeForecaster.kl_divergence
    mean, logvar = torch.ones(2, 16), torch.zeros(2, 16)
    torch.testing.assert_close(kl(mean, logvar), torch.full((2,), 8.0))               # 16 * 1/2 * 1
    torch.testing.assert_close(kl(torch.zeros(1, 4), torch.full((1, 4), math.log(2.0))),
                               torch.tensor([4 * 0.5 * (2 - 1 - math.log(2.0))]))
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(16), torch.ones(16))
    torch.testing.assert_close(kl(mean, logvar), torch.distributions.kl_divergence(q, p).sum(-1))


def test_latent_ode_loss_terms():
    model, batch = _model("latent_ode", kl_weight=0.5), random_batch()
    loss, terms = model.loss(batch, torch.Generator().manual_seed(1))
    mean, logvar = model.posterior(batch)
    assert set(terms) == {"mse", "kl"}
    assert terms["kl"] == pytest.approx(model.kl_divergence(mean, logvar)[batch.mask].sum().item(), rel=1e-5)
    assert loss.item() == pytest.approx(terms["mse"] + 0.5 * terms["kl"], rel=1e-5)
    # the noise comes from the generator: same seed, same loss; another seed, another loss
    assert model.loss(batch, torch.Generator().manual_seed(1))[0].item() == loss.item()
    assert model.loss(batch, torch.Generator().manual_seed(2))[0].item() != loss.item()


def test_latent_ode_integrates_a_linear_ode_in_epochs():
    """dz/dt = A z (t in epochs) has z(t) = expm(A t) z0: the decoded forecast matches it."""
    model = _model("latent_ode", latent_dim=3)
    a = torch.tensor([[-0.2, 0.5, 0.0], [-0.5, -0.2, 0.0], [0.0, 0.0, 0.1]])
    linear = torch.nn.Linear(3, 3, bias=False)
    linear.weight.data.copy_(a)
    model.dynamics.net = linear
    z0 = torch.randn(5, 3)
    t_out = EPOCH * torch.tensor([1.0, 2.5, 4.0, 6.0])
    with torch.no_grad():
        got = model.decode(z0, t_out)
        expected = torch.stack([model.decoder(z0 @ torch.linalg.matrix_exp(a * t).T).squeeze(-1)
                                for t in (t_out / EPOCH).tolist()], 1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_latent_ode_forward_uses_the_mean_and_samples_spread():
    model, batch = _model("latent_ode").eval(), random_batch()
    with torch.no_grad():
        mean, _ = model.posterior(batch)
        torch.testing.assert_close(model(batch), model.decode(mean, batch.t_out))
        samples = model.sample(batch, 7, torch.Generator().manual_seed(0))
        assert samples.shape == (7, batch.n_nodes, H) and torch.isfinite(samples).all()
        assert samples.std(0).mean() > 0
        assert torch.equal(samples, model.sample(batch, 7, torch.Generator().manual_seed(0)))
        # sample s of node i is decoded from its own z0: node 0 alone gives the same draws
        one = model.sample(_replace(batch, coords=batch.coords[:1], history=batch.history[:1],
                                    edge_index=torch.zeros(2, 0, dtype=torch.long), target=None, mask=None),
                           1, torch.Generator().manual_seed(0))
        torch.testing.assert_close(one[0, 0], samples[0, 0])


# --------------------------------------------------------------------------------------------- speed
@pytest.mark.parametrize("name", bl.NEURAL)
def test_cpu_fast_enough(name):
    """500 nodes, L=24, H=6: forward + backward well under 0.5 s on one core (best of 3)."""
    assert torch.get_num_threads() == 1
    torch.manual_seed(0)
    model = bl.build(name, 24, 6)
    g = torch.Generator().manual_seed(0)
    t_in, t_out = _times(24, 6)
    src, dst = torch.randint(0, 500, (2, 2000), generator=g)
    batch = GraphBatch(coords=torch.randn(500, 3, generator=g), history=torch.randn(500, 24, generator=g),
                       t_in=t_in, t_out=t_out, edge_index=torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]),
                       target=torch.randn(500, 6, generator=g))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        model.zero_grad()
        model.loss(batch, g)[0].backward()
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, best
