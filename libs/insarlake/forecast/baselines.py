"""The baselines DAPF is compared with: three classical forecasts (numpy, no training) and three
neural ones (torch), all in the normalised units of :class:`~insarlake.forecast.batch.GraphBatch`.

Shapes: n nodes, L input epochs, H forecast epochs; history (n, L) is the input window minus its last
value divided by scale_mm (so its last column is 0), t_in (L,) and t_out (H,) are years relative to the
last input epoch. Every forecast is (n, H) in the same normalised units.

Classical (``classical_forecast(name, history, t_in, t_out)``):

* ``historical_average``: the mean of the input window, at every forecast epoch (the seed's HA);
* ``persistence``: the last input value (0 in normalised units);
* ``linear_trend``: the least-squares line through the window (against t_in), evaluated at t_out.

On the whole record (``harmonic_trend(record_mm, t_record, t_out, window_len)``, in mm):

* ``harmonic_trend``: the model an InSAR analyst fits first, per pixel a + b t + c sin 2πt + d cos 2πt
  (t in years) by least squares on every epoch before the forecast origin, evaluated at t_out, its
  level moved by the mean residual of the input window (the last ``window_len`` epochs); on a record
  shorter than a year, the trend alone. ``harmonic_fit`` evaluates the same fit at any times (DAPF's
  ``record`` input: the fit at the window's input epochs and forecast times).

Neural (``build(name, input_len, horizon, **hyper)``; forward -> (n, H), loss -> (sum over masked
nodes, terms)):

* ``gru`` (:class:`GruForecaster`): a GRU over each node's window (no graph), linear head to H values;
* ``latent_ode`` (:class:`LatentOdeForecaster`, Chen et al. 2018): a GRU encoder over the reversed
  window gives q(z0) = N(mean, diag exp(logvar)); dz/dt = MLP(z) integrated with fixed-step RK4 in
  epochs (t / time_unit_years) to t_out; a linear decoder. Loss MSE + kl_weight * KL(q || N(0, I));
* ``gcn_gru`` (:class:`GcnGruForecaster`, T-GCN style): a GRU cell whose gates see graph-convolved
  [input, hidden] (D^-1/2 (A + I) D^-1/2 over ``edge_index``), inputs [history value, coords].
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from insarlake.forecast.batch import GraphBatch

__all__ = [
    "CLASSICAL", "NEURAL", "RECORD_BASELINES", "EPOCH_YEARS",
    "historical_average", "persistence", "linear_trend", "classical_forecast", "harmonic_fit", "harmonic_trend",
    "GruForecaster", "LatentOdeForecaster", "GcnGruForecaster", "build",
]

EPOCH_YEARS = 6.0 / 365.25      # one Sentinel-1 revisit: the default time unit of the neural models


# ----------------------------------------------------------------------------------------- classical
def _check_series(history, t_in) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies: history (n, L) finite, t_in (L,) finite and strictly increasing."""
    history = np.asarray(history, dtype=np.float64)
    t_in = np.asarray(t_in, dtype=np.float64)
    if history.ndim != 2 or history.shape[1] == 0:
        raise ValueError(f"history must be (n, L) with L >= 1, got shape {history.shape}")
    if t_in.shape != (history.shape[1],):
        raise ValueError(f"t_in must be (L={history.shape[1]},), got shape {t_in.shape}")
    for name, values in (("history", history), ("t_in", t_in)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} has NaN or infinite values")
    if (np.diff(t_in) <= 0).any():
        raise ValueError("t_in must be strictly increasing")
    return history, t_in


def _check_classical(history, t_in, t_out) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 copies: history (n, L), t_in (L,) increasing, t_out (H,) increasing after t_in."""
    history, t_in = _check_series(history, t_in)
    t_out = np.asarray(t_out, dtype=np.float64)
    if t_out.ndim != 1 or t_out.size == 0:
        raise ValueError(f"t_out must be (H,) with H >= 1, got shape {t_out.shape}")
    if not np.isfinite(t_out).all():
        raise ValueError("t_out has NaN or infinite values")
    if (np.diff(t_out) <= 0).any() or t_out[0] <= t_in[-1]:
        raise ValueError("t_out must be strictly increasing and after the last input epoch t_in[-1]")
    return history, t_in, t_out


def historical_average(history, t_in, t_out) -> np.ndarray:
    """(n, H): each node's mean over its input window (n, L), repeated at every forecast epoch."""
    history, _, t_out = _check_classical(history, t_in, t_out)
    return np.repeat(history.mean(axis=1, keepdims=True), t_out.size, axis=1)


def persistence(history, t_in, t_out) -> np.ndarray:
    """(n, H): each node's last input value (0 for a normalised window), at every forecast epoch."""
    history, _, t_out = _check_classical(history, t_in, t_out)
    return np.repeat(history[:, -1:], t_out.size, axis=1)


def linear_trend(history, t_in, t_out) -> np.ndarray:
    """(n, H): each node's least-squares line y = a + b t through (t_in, history) evaluated at t_out
    (a single input epoch gives the constant line through it)."""
    history, t_in, t_out = _check_classical(history, t_in, t_out)
    t_mean = t_in.mean()
    dt = t_in - t_mean
    y_mean = history.mean(axis=1, keepdims=True)
    sxx = float(dt @ dt)
    slope = ((history - y_mean) @ dt)[:, None] / sxx if sxx > 0 else np.zeros_like(y_mean)
    return y_mean + slope * (t_out[None, :] - t_mean)


_CLASSICAL = {"historical_average": historical_average, "persistence": persistence, "linear_trend": linear_trend}
CLASSICAL = tuple(_CLASSICAL)


def classical_forecast(name: str, history, t_in, t_out) -> np.ndarray:
    """(n, H) forecast of the classical baseline ``name`` (one of CLASSICAL) from history (n, L)."""
    if name not in _CLASSICAL:
        raise ValueError(f"unknown classical model {name!r} (known: {', '.join(CLASSICAL)})")
    return _CLASSICAL[name](history, t_in, t_out)


ANNUAL_MIN_SPAN_YEARS = 1.0     # the record an annual sinusoid is fitted on


def harmonic_design(t_years, annual: bool = True) -> np.ndarray:
    """(T, 4) columns [1, t, sin 2πt, cos 2πt] of the trend-plus-annual model at ``t_years`` (T,);
    without ``annual``, (T, 2): the trend's [1, t]."""
    t = np.asarray(t_years, dtype=np.float64)
    phase = 2.0 * np.pi * t
    columns = [np.ones_like(t), t] + ([np.sin(phase), np.cos(phase)] if annual else [])
    return np.stack(columns, axis=1)


def harmonic_fit(record_mm, t_record, t_eval, window_len: int, annual: bool | None = None) -> np.ndarray:
    """(n, E) mm: each pixel's linear trend plus annual sinusoid (the trend alone without
    ``annual``) fitted by least squares on its record (n, M) mm at t_record (M,) years, evaluated at
    any times t_eval (E,) years, plus the mean residual of the record's last ``window_len`` epochs
    (the level a forecast starts from). Fewer epochs than terms: the minimum-norm least-squares fit.
    ``annual`` None: the sinusoid when the record spans at least ANNUAL_MIN_SPAN_YEARS (over a
    shorter record it is not told apart from the trend, and its extrapolation swings)."""
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or not np.isfinite(t_eval).all():
        raise ValueError(f"t_eval must be (E,) finite with E >= 1, got shape {t_eval.shape}")
    record, t_record = _check_series(record_mm, t_record)
    if annual is None:
        annual = bool(t_record[-1] - t_record[0] >= ANNUAL_MIN_SPAN_YEARS)
    if not 1 <= window_len <= record.shape[1]:
        raise ValueError(f"window_len must be in 1..{record.shape[1]}, got {window_len}")
    design = harmonic_design(t_record, annual)                             # (M, 4)
    coef, *_ = np.linalg.lstsq(design, record.T, rcond=None)               # (4, n)
    residual = record[:, -window_len:] - (design[-window_len:] @ coef).T   # (n, L)
    return (harmonic_design(t_eval, annual) @ coef).T + residual.mean(axis=1, keepdims=True)


def harmonic_trend(record_mm, t_record, t_out, window_len: int) -> np.ndarray:
    """(n, H) mm: ``harmonic_fit`` of the record (n, M) mm at t_record (M,) years (every epoch
    before the forecast origin) evaluated at the forecast times t_out (H,) years, after the record."""
    _check_classical(record_mm, t_record, t_out)
    return harmonic_fit(record_mm, t_record, t_out, window_len)


RECORD_BASELINES = ("harmonic_trend",)


# -------------------------------------------------------------------------------------------- neural
def _positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


class _Forecaster(nn.Module):
    """Shared checks and the masked MSE loss of a point forecaster."""

    def __init__(self, input_len: int, horizon: int, time_unit_years: float):
        super().__init__()
        _positive(input_len=input_len, horizon=horizon, time_unit_years=time_unit_years)
        self.input_len = int(input_len)
        self.horizon = int(horizon)
        self.time_unit_years = float(time_unit_years)

    def _check_batch(self, batch: GraphBatch, need_target: bool = False) -> None:
        if batch.input_len != self.input_len:
            raise ValueError(f"batch.history has L={batch.input_len} epochs, the model takes {self.input_len}")
        if batch.horizon != self.horizon:
            raise ValueError(f"batch.t_out has H={batch.horizon} epochs, the model forecasts {self.horizon}")
        if need_target and batch.target is None:
            raise ValueError("batch.target is None: the loss needs targets")

    def _step_inputs(self, batch: GraphBatch) -> torch.Tensor:
        """(n, L, 2): [history value, t_in in units of the window length (about -1 .. 0)] per step."""
        t = batch.t_in.to(batch.history) / (self.time_unit_years * self.input_len)
        return torch.stack([batch.history, t.expand_as(batch.history)], dim=-1)

    @staticmethod
    def _masked_sum(per_node: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return per_node[mask].sum()

    def loss(self, batch: GraphBatch, generator: torch.Generator | None = None):
        """(sum over masked nodes of each node's MSE over the H epochs, {"mse": that sum})."""
        self._check_batch(batch, need_target=True)
        mse = self._masked_sum(((self(batch) - batch.target) ** 2).mean(dim=1), batch.mask)
        return mse, {"mse": float(mse.detach())}


class GruForecaster(_Forecaster):
    """Per-node GRU over the input window (inputs [value, time] per step), linear head to H values.
    No graph: each node's forecast depends on its own history only."""

    def __init__(self, input_len: int, horizon: int, hidden_units: int = 32, num_layers: int = 1,
                 time_unit_years: float = EPOCH_YEARS):
        super().__init__(input_len, horizon, time_unit_years)
        _positive(hidden_units=hidden_units, num_layers=num_layers)
        self.gru = nn.GRU(2, hidden_units, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_units, horizon)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """(n, H) normalised forecast."""
        self._check_batch(batch)
        _, h = self.gru(self._step_inputs(batch))
        return self.head(h[-1])


class _Dynamics(nn.Module):
    """dz/dt = MLP(z), autonomous."""

    def __init__(self, latent_dim: int, hidden_units: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_units), nn.Tanh(),
                                 nn.Linear(hidden_units, latent_dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentOdeForecaster(_Forecaster):
    """Latent ODE (Chen et al. 2018): GRU encoder over the reversed window -> q(z0) = N(mean, diag
    exp(logvar)), z(t) from dz/dt = MLP(z) (RK4, step ``step_size_epochs`` in units of
    ``time_unit_years``) from z(0) = z0 at the last input epoch, linear decoder z -> value.

    forward decodes z0 = mean; loss per node = MSE(decode(z0 ~ q)) + kl_weight * KL(q || N(0, I));
    sample draws z0 ~ q (no observation noise)."""

    def __init__(self, input_len: int, horizon: int, hidden_units: int = 32, latent_dim: int = 16,
                 ode_hidden_units: int = 32, kl_weight: float = 1e-3, step_size_epochs: float = 0.5,
                 time_unit_years: float = EPOCH_YEARS):
        super().__init__(input_len, horizon, time_unit_years)
        _positive(hidden_units=hidden_units, latent_dim=latent_dim, ode_hidden_units=ode_hidden_units,
                  step_size_epochs=step_size_epochs)
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self.latent_dim = int(latent_dim)
        self.kl_weight = float(kl_weight)
        self.step_size_epochs = float(step_size_epochs)
        self.encoder = nn.GRU(2, hidden_units, batch_first=True)
        self.to_posterior = nn.Linear(hidden_units, 2 * latent_dim)
        self.dynamics = _Dynamics(latent_dim, ode_hidden_units)
        self.decoder = nn.Linear(latent_dim, 1)

    def posterior(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each (n, latent_dim): the Gaussian q(z0 | window) of each node."""
        self._check_batch(batch)
        _, h = self.encoder(self._step_inputs(batch).flip(1))
        mean, logvar = self.to_posterior(h[-1]).chunk(2, dim=-1)
        return mean, logvar

    @staticmethod
    def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(n,) KL(N(mean, diag exp(logvar)) || N(0, I)) = 1/2 sum(exp(logvar) + mean^2 - 1 - logvar)."""
        return 0.5 * (logvar.exp() + mean ** 2 - 1.0 - logvar).sum(dim=-1)

    def decode(self, z0: torch.Tensor, t_out: torch.Tensor) -> torch.Tensor:
        """(m, H) decoded trajectories at t_out (H,) years from initial states z0 (m, latent_dim)."""
        t = torch.cat([t_out.new_zeros(1), t_out]).to(z0) / self.time_unit_years
        z = odeint(self.dynamics, z0, t, method="rk4", options={"step_size": self.step_size_epochs})
        return self.decoder(z[1:]).squeeze(-1).transpose(0, 1)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """(n, H) normalised forecast from the posterior mean of z0."""
        mean, _ = self.posterior(batch)
        return self.decode(mean, batch.t_out)

    def _noise(self, shape, like: torch.Tensor, generator):
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    def loss(self, batch: GraphBatch, generator: torch.Generator | None = None):
        """(sum over masked nodes of MSE + kl_weight * KL, {"mse": sum of MSE, "kl": sum of KL});
        the MSE decodes one reparameterised z0 ~ q per node (noise from ``generator``)."""
        self._check_batch(batch, need_target=True)
        mean, logvar = self.posterior(batch)
        z0 = mean + (0.5 * logvar).exp() * self._noise(mean.shape, mean, generator)
        mse = self._masked_sum(((self.decode(z0, batch.t_out) - batch.target) ** 2).mean(dim=1), batch.mask)
        kl = self._masked_sum(self.kl_divergence(mean, logvar), batch.mask)
        return mse + self.kl_weight * kl, {"mse": float(mse.detach()), "kl": float(kl.detach())}

    def sample(self, batch: GraphBatch, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n_samples, n, H) forecasts decoded from z0 ~ q(z0 | window) (normalised units)."""
        _positive(n_samples=n_samples)
        mean, logvar = self.posterior(batch)
        shape = (n_samples, *mean.shape)
        z0 = mean + (0.5 * logvar).exp() * self._noise(shape, mean, generator)
        return self.decode(z0.reshape(-1, self.latent_dim), batch.t_out).reshape(n_samples, batch.n_nodes, -1)


def gcn_propagator(edge_index: torch.Tensor, n_nodes: int):
    """X (n, d) -> D^-1/2 (A + I) D^-1/2 X for the graph ``edge_index`` (2, E) (source, target rows;
    undirected edges listed both ways), degrees counted with the added self loop."""
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n_nodes):
        raise ValueError(f"edge_index has node indices outside 0 .. {n_nodes - 1}")
    source, target = edge_index[0], edge_index[1]
    degree = torch.ones(n_nodes, device=edge_index.device).index_add_(
        0, target, torch.ones(target.numel(), device=edge_index.device))
    inv_sqrt = degree.rsqrt()
    edge_weight = (inv_sqrt[source] * inv_sqrt[target])[:, None]
    self_weight = (1.0 / degree)[:, None]

    def propagate(x: torch.Tensor) -> torch.Tensor:
        return (x * self_weight.to(x)).index_add(0, target, x[source] * edge_weight.to(x))

    return propagate


class GcnGruForecaster(_Forecaster):
    """T-GCN style graph GRU: at each input step tau, with x = [history[:, tau], coords] and
    G = the normalised graph convolution,
    [r, u] = sigmoid(W_g G[x, h] + b_g), c = tanh(W_c G[x, r * h] + b_c), h = u * h + (1 - u) * c;
    a linear head maps the last h to H values."""

    def __init__(self, input_len: int, horizon: int, hidden_units: int = 32,
                 time_unit_years: float = EPOCH_YEARS):
        super().__init__(input_len, horizon, time_unit_years)
        _positive(hidden_units=hidden_units)
        self.hidden_units = int(hidden_units)
        self.gates = nn.Linear(4 + hidden_units, 2 * hidden_units)
        self.candidate = nn.Linear(4 + hidden_units, hidden_units)
        self.head = nn.Linear(hidden_units, horizon)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """(n, H) normalised forecast."""
        self._check_batch(batch)
        propagate = gcn_propagator(batch.edge_index, batch.n_nodes)
        coords = batch.coords.to(batch.history)
        h = batch.history.new_zeros(batch.n_nodes, self.hidden_units)
        for tau in range(self.input_len):
            x = torch.cat([batch.history[:, tau:tau + 1], coords], dim=1)
            r, u = torch.sigmoid(self.gates(propagate(torch.cat([x, h], dim=1)))).chunk(2, dim=1)
            c = torch.tanh(self.candidate(propagate(torch.cat([x, r * h], dim=1))))
            h = u * h + (1.0 - u) * c
        return self.head(h)


_NEURAL = {"gru": GruForecaster, "latent_ode": LatentOdeForecaster, "gcn_gru": GcnGruForecaster}
NEURAL = tuple(_NEURAL)


def build(name: str, input_len: int, horizon: int, **hyper) -> nn.Module:
    """The neural baseline ``name`` (one of NEURAL) for windows of L=input_len and H=horizon epochs."""
    if name not in _NEURAL:
        raise ValueError(f"unknown baseline model {name!r} (known: {', '.join(NEURAL)})")
    cls = _NEURAL[name]
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "input_len", "horizon")]
    unknown = sorted(set(hyper) - set(known))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for model {name!r} "
                         f"(known: {', '.join(known)})")
    return cls(input_len, horizon, **hyper)
