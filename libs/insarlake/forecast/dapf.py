"""DAPF, the seed paper's Distribution Aware Probabilistic Framework (seed 000), in pure torch.

One forward pass over a ``GraphBatch`` (n nodes, L input epochs, H forecast epochs, E directed
candidate edges; all displacements in the batch's normalised units):

1. p(U | V, S), Eq. (3): a RealNVP flow maps x = [coords (3), history[:, tau] (1)] of every (node,
   input epoch tau) to a latent u of dim 4, conditioned on the rescaled input time t_in[tau] / span
   (in [-1, 0]); log p(x) = log N(u; 0, I) + log|det du/dx|.  ``Dapf.embed`` -> (n, L, 4).
2. p(A | U), Eq. (4): p(A_ij^tau = 0) = sigmoid(||u_i^tau - u_j^tau||^2), evaluated on the candidate
   edges only (E, L), never n x n.  The GCN's edge weight is 2 * mean_tau p(A_ij^tau = 1), in (0, 1]
   (p(A = 1) <= 1/2 by construction of Eq. 4; doubling makes coincident embeddings weigh like the
   self loop).  ``Dapf.edge_weights`` -> (E,).
3. q(W | A, V, S): a variational graph auto-encoder (Kipf & Welling 2016): a 2-layer GCN on
   [coords, history] (n, 3 + L) -> mu, logvar (n, M); decoders: sigmoid(w_i . w_j) for the adjacency
   and an MLP W -> history (n, L).
4. q(Y | W, S): z0 = MLP([w, history]) (n, M), dz/dt = f(z, neighbour mean of z - z) integrated with
   torchdiffeq's fixed-step rk4 over the rescaled time t_out / t_out[-1] in (0, 1]; each z(t_h) is
   decoded to a mean (minus the decoding of z(0), so the mean forecast is 0 at t = 0) and a log-std
   (n, H): q(Y) is Gaussian.
5. The whole record (``record_prior``, on by default; off is the seed's model): the window holds
   L epochs, a pixel's record hundreds. ``batch.record`` (n, L + H), each pixel's trend plus annual
   sinusoid fitted on every epoch before the forecast origin (``harmonic_trend``) at the input and
   forecast epochs, joins the history as a node feature of the GCN and of z0, and q(Y)'s mean is
   that fit's forecast plus the ODE's decoding, whose head starts at zero: training starts from the
   record model and learns where the ground departs from it (neighbours, recent change).

Loss (sum over masked nodes of per-node terms, each term's per-epoch values averaged over its
epochs so that a weight means the same whatever L and H), with default weights:

=====================  ==============================================================  =======
term                   per node                                                        weight
=====================  ==============================================================  =======
``kl_w``               KL(q(W) || N(0, I)), summed over the M latent dims              0.01
``adjacency``          soft BCE of sigmoid(w_i . w_j) vs mean_tau p(A_ij = 1), mean    0.1
                       over the node's outgoing edges (target detached)
``series``             0.5 * mean_tau (decoded history - history)^2 (unit-variance NLL)  0.1
``flow_nll``           -mean_tau log p(coords, history[:, tau]) under the flow (Eq. 3)  0.01
``entropy``            -H[q(Y | W, S)] per epoch                                        0.01
``prior``              -E_q[log N(Y; 0, 1)] per epoch (closed form; with record_prior,  0.01
                       of Y minus the record model's forecast)
``mse``                (mean forecast - target)^2 per epoch                             1
``nll``                -log N(target; mean, std) per epoch (calibrates the log-std)     1
=====================  ==============================================================  =======

kl_w + adjacency + series + entropy + prior are the bound of Eq. (5); the paper adds the MSE; the
Gaussian NLL is what makes the predictive spread mean something.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.nn import functional as F
from torchdiffeq import odeint

from insarlake.forecast.batch import GraphBatch

FLOW_DIM = 4            # x = [coords (3), displacement (1)] and its latent u
_LOG_2PI = math.log(2.0 * math.pi)
_MIN_LOG_STD, _MAX_LOG_STD = -7.0, 3.0
_MIN_LOGVAR, _MAX_LOGVAR = -12.0, 6.0


def _mlp(n_in: int, n_hidden: int, n_out: int, zero_last: bool = False) -> nn.Sequential:
    """Two tanh hidden layers; with ``zero_last`` the output layer starts at zero."""
    net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_hidden), nn.Tanh(),
                        nn.Linear(n_hidden, n_out))
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


def _check_edge_index(edge_index: torch.Tensor, n_nodes: int, name: str = "edge_index") -> None:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} must be (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n_nodes):
        raise ValueError(f"{name} must index nodes 0..{n_nodes - 1}")


# ---------------------------------------------------------------------------------------------
# 1. Normalizing flow, Eq. (3)
# ---------------------------------------------------------------------------------------------

class _AffineCoupling(nn.Module):
    """u = m * x + (1 - m) * (x * exp(s) + t), with s, t = net(m * x, cond); s = b * tanh(raw)."""

    def __init__(self, mask: torch.Tensor, cond_dim: int, hidden_units: int, max_log_scale: float):
        super().__init__()
        self.register_buffer("mask", mask)
        self.max_log_scale = max_log_scale
        self.net = _mlp(mask.numel() + cond_dim, hidden_units, 2 * mask.numel(), zero_last=True)

    def _scale_shift(self, kept: torch.Tensor, cond: torch.Tensor | None):
        h = kept if cond is None else torch.cat([kept, cond], dim=-1)
        raw_s, t = self.net(h).chunk(2, dim=-1)
        free = 1.0 - self.mask
        return self.max_log_scale * torch.tanh(raw_s) * free, t * free

    def forward(self, x, cond):
        s, t = self._scale_shift(x * self.mask, cond)
        return x * self.mask + (1.0 - self.mask) * (x * torch.exp(s) + t), s.sum(-1)

    def inverse(self, u, cond):
        s, t = self._scale_shift(u * self.mask, cond)
        return u * self.mask + (1.0 - self.mask) * ((u - t) * torch.exp(-s))


class RealNVP(nn.Module):
    """RealNVP flow x (..., dim) -> u (..., dim) of affine coupling layers whose masks cycle through
    even/odd dims and first/second half (each followed by its complement); each coupling net is an
    MLP on the kept dims (and an optional conditioning vector (..., cond_dim)) with tanh-bounded
    log-scales (|s| <= max_log_scale).  Coupling nets start at zero: the flow starts as the identity.
    """

    def __init__(self, dim: int = FLOW_DIM, n_layers: int = 4, hidden_units: int = 32, cond_dim: int = 0,
                 max_log_scale: float = 2.0):
        super().__init__()
        if dim < 2 or n_layers < 1 or hidden_units < 1 or cond_dim < 0 or max_log_scale <= 0:
            raise ValueError(f"bad RealNVP sizes: dim={dim} (>= 2), n_layers={n_layers} (>= 1), "
                             f"hidden_units={hidden_units}, cond_dim={cond_dim}, max_log_scale={max_log_scale}")
        self.dim, self.cond_dim = dim, cond_dim
        idx = torch.arange(dim)
        layers = []
        for k in range(n_layers):
            base = (idx % 2 == 0) if (k // 2) % 2 == 0 else (idx < dim // 2)
            mask = base if k % 2 == 0 else ~base
            layers.append(_AffineCoupling(mask.float(), cond_dim, hidden_units, max_log_scale))
        self.layers = nn.ModuleList(layers)

    def _check(self, x: torch.Tensor, cond: torch.Tensor | None, name: str) -> None:
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"{name} must be (..., {self.dim}), got {tuple(x.shape)}")
        if self.cond_dim and (cond is None or cond.shape != x.shape[:-1] + (self.cond_dim,)):
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond must be {tuple(x.shape[:-1]) + (self.cond_dim,)}, got {got}")
        if not self.cond_dim and cond is not None:
            raise ValueError("cond must be None for an unconditional flow (cond_dim=0)")

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., dim) -> u (..., dim), log|det du/dx| (...) (exact, per row)."""
        self._check(x, cond, "x")
        log_det = x.new_zeros(x.shape[:-1])
        for layer in self.layers:
            x, ld = layer(x, cond)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """u (..., dim) -> x (..., dim)."""
        self._check(u, cond, "u")
        for layer in reversed(self.layers):
            u = layer.inverse(u, cond)
        return u

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) = log N(u; 0, I) + log|det du/dx|, (...)."""
        u, log_det = self(x, cond)
        return standard_normal_log_prob(u) + log_det


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """log N(u; 0, I) summed over the last dim: (..., d) -> (...)."""
    return -0.5 * (u.pow(2).sum(-1) + u.shape[-1] * _LOG_2PI)


def flow_negative_log_likelihood(u: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """-log p(x) = -(log N(u; 0, I) + log|det du/dx|) averaged over the input epochs, from a flow's
    output for x (n, L, dim): u (n, L, dim), log_det (n, L) -> (n,)."""
    if u.dim() != 3 or log_det.shape != u.shape[:-1]:
        raise ValueError(f"u must be (n, L, dim) and log_det (n, L), got {tuple(u.shape)} and {tuple(log_det.shape)}")
    return -(standard_normal_log_prob(u) + log_det).mean(-1)


# ---------------------------------------------------------------------------------------------
# 2. Dynamic adjacency, Eq. (4)
# ---------------------------------------------------------------------------------------------

def edge_probability(u_src: torch.Tensor, u_dst: torch.Tensor) -> torch.Tensor:
    """p(A_ij = 1 | u_i, u_j) = 1 - sigmoid(||u_i - u_j||^2) (Eq. 4's complement), one value per
    row: u_src, u_dst (E, ..., d) -> (E, ...)."""
    if u_src.shape != u_dst.shape:
        raise ValueError(f"u_src and u_dst must have one shape, got {tuple(u_src.shape)} and {tuple(u_dst.shape)}")
    return torch.sigmoid(-(u_src - u_dst).pow(2).sum(-1))     # 1 - sigmoid(d) == sigmoid(-d)


def edge_absence_probability(u_src: torch.Tensor, u_dst: torch.Tensor) -> torch.Tensor:
    """p(A_ij = 0 | u_i, u_j) = sigmoid(||u_i - u_j||^2), Eq. (4): (E, ..., d) -> (E, ...)."""
    return 1.0 - edge_probability(u_src, u_dst)


def dynamic_adjacency(u: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """p(A_ij^tau = 1) on the candidate edges: u (n, L, d), edge_index (2, E) -> (E, L)."""
    if u.dim() != 3:
        raise ValueError(f"u must be (n, L, d), got {tuple(u.shape)}")
    _check_edge_index(edge_index, u.shape[0])
    return edge_probability(u[edge_index[0]], u[edge_index[1]])


# ---------------------------------------------------------------------------------------------
# 3. Variational graph auto-encoder q(W | A, V, S)
# ---------------------------------------------------------------------------------------------

def _gcn_norm(edge_index: torch.Tensor, edge_weight: torch.Tensor, n_nodes: int):
    """Symmetric normalisation with unit self loops: (edge norm (E,), self-loop norm (n,))."""
    deg = torch.ones(n_nodes, dtype=edge_weight.dtype, device=edge_weight.device)
    deg = deg.index_add(0, edge_index[1], edge_weight)
    dinv = deg.rsqrt()
    return dinv[edge_index[0]] * edge_weight * dinv[edge_index[1]], dinv * dinv


def _propagate(h: torch.Tensor, edge_index: torch.Tensor, norm: torch.Tensor, self_norm: torch.Tensor) -> torch.Tensor:
    out = h * self_norm.unsqueeze(-1)
    return out.index_add(0, edge_index[1], h[edge_index[0]] * norm.unsqueeze(-1))


class GraphConv(nn.Module):
    """Kipf & Welling GCN layer, D^-1/2 (A + I) D^-1/2 X Theta + b with weighted edges (messages go
    from edge_index[0] to edge_index[1], as torch_geometric's GCNConv): (n, in) -> (n, out)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None,
                norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if norm is None:
            _check_edge_index(edge_index, x.shape[0])
            if edge_weight is None:
                edge_weight = x.new_ones(edge_index.shape[1])
            norm = _gcn_norm(edge_index, edge_weight, x.shape[0])
        return _propagate(self.lin(x), edge_index, *norm) + self.bias


class VgaeEncoder(nn.Module):
    """q(W | A, V, S): GCN(in -> hidden) + ReLU, then GCN heads -> mu, logvar (n, latent_dim)."""

    def __init__(self, in_features: int, hidden_units: int, latent_dim: int):
        super().__init__()
        self.conv = GraphConv(in_features, hidden_units)
        self.mu = GraphConv(hidden_units, latent_dim)
        self.logvar = GraphConv(hidden_units, latent_dim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor):
        norm = _gcn_norm(edge_index, edge_weight, x.shape[0])
        h = torch.relu(self.conv(x, edge_index, norm=norm))
        logvar = self.logvar(h, edge_index, norm=norm).clamp(_MIN_LOGVAR, _MAX_LOGVAR)
        return self.mu(h, edge_index, norm=norm), logvar


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row, closed form: (n, M) -> (n,)."""
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have one shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)


def adjacency_reconstruction_nll(w: torch.Tensor, edge_index: torch.Tensor, target_prob: torch.Tensor) -> torch.Tensor:
    """Inner-product decoder p(A_ij = 1 | W) = sigmoid(w_i . w_j) against soft targets: binary cross
    entropy per edge, averaged over each source node's edges (0 for a node without edges):
    w (n, M), edge_index (2, E), target_prob (E,) in [0, 1] -> (n,)."""
    n = w.shape[0]
    _check_edge_index(edge_index, n)
    if target_prob.shape != (edge_index.shape[1],):
        raise ValueError(f"target_prob must be (E={edge_index.shape[1]},), got {tuple(target_prob.shape)}")
    if target_prob.numel() and (float(target_prob.min()) < 0.0 or float(target_prob.max()) > 1.0):
        raise ValueError("target_prob must lie in [0, 1]")
    src, dst = edge_index
    logits = (w[src] * w[dst]).sum(-1)
    bce = F.binary_cross_entropy_with_logits(logits, target_prob, reduction="none")
    total = w.new_zeros(n).index_add(0, src, bce)
    count = w.new_zeros(n).index_add(0, src, torch.ones_like(bce))
    return total / count.clamp(min=1.0)


def series_reconstruction_nll(reconstruction: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Unit-variance Gaussian NLL (without its constant) of the history under its reconstruction,
    0.5 * mean over epochs of the squared error: (n, L), (n, L) -> (n,)."""
    if reconstruction.shape != history.shape:
        raise ValueError(f"reconstruction must be {tuple(history.shape)}, got {tuple(reconstruction.shape)}")
    return 0.5 * (reconstruction - history).pow(2).mean(-1)


# ---------------------------------------------------------------------------------------------
# 4. q(Y | W, S): an ODE dynamic system
# ---------------------------------------------------------------------------------------------

class _Dynamics(nn.Module):
    """dz/dt = f([z, neighbour mean of z - z]); the graph term is zero without a graph."""

    def __init__(self, state_dim: int, hidden_units: int):
        super().__init__()
        self.net = _mlp(2 * state_dim, hidden_units, state_dim)
        self.graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, t, z):
        if self.graph is None:
            diff = torch.zeros_like(z)
        else:
            src, dst, w = self.graph                       # w: row-normalised weights (E,)
            diff = torch.zeros_like(z).index_add(-2, dst, (z[..., src, :] - z[..., dst, :]) * w.unsqueeze(-1))
        return self.net(torch.cat([z, diff], dim=-1))


class OdeForecaster(nn.Module):
    """Initial features (..., n, F) -> Gaussian forecast mean, log-std (..., n, H).

    z0 = MLP(features) (..., n, state_dim); dz/dt = f(z, weighted neighbour mean of z - z) integrated
    by fixed-step rk4 over s = t_out / t_out[-1] in (0, 1], or over physical time s = t_out / time_unit
    when time_unit is given (then a longer horizon in time is integrated further), on a grid of
    ``steps`` equal steps (None: one per forecast epoch, or per time unit) merged with the output times; mean_h = g(z(s_h)) (free to start away from
    the last, noisy, input value: the level is part of the forecast),
    log_std_h = clamp(k(z(s_h))).  Without edges (or graph_coupling=False) nodes evolve alone.
    """

    def __init__(self, in_features: int, state_dim: int = 16, hidden_units: int = 32, steps: int | None = None,
                 graph_coupling: bool = True, time_unit: float | None = None):
        super().__init__()
        if time_unit is not None and not time_unit > 0:
            raise ValueError(f"time_unit must be > 0 or None, got {time_unit!r}")
        self.time_unit = time_unit
        if in_features < 1 or state_dim < 1 or hidden_units < 1 or (steps is not None and steps < 1):
            raise ValueError(f"bad OdeForecaster sizes: in_features={in_features}, state_dim={state_dim}, "
                             f"hidden_units={hidden_units}, steps={steps}")
        self.steps, self.graph_coupling = steps, graph_coupling
        self.init = _mlp(in_features, hidden_units, state_dim)
        self.dynamics = _Dynamics(state_dim, hidden_units)
        self.mean_head = nn.Linear(state_dim, 1)
        self.log_std_head = nn.Linear(state_dim, 1)

    def _grid(self, s_out: torch.Tensor) -> torch.Tensor:
        end = float(s_out[-1])
        steps = self.steps or (max(int(math.ceil(end)), 1) if self.time_unit is not None else s_out.numel())
        uniform = torch.linspace(0.0, end, steps + 1, dtype=s_out.dtype, device=s_out.device)
        return torch.unique(torch.cat([uniform, s_out]))                   # sorted

    def forward(self, features: torch.Tensor, t_out: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (..., n, F), t_out (H,) > 0 increasing (any unit), optional edge_index (2, E) and
        edge_weight (E,) >= 0 -> mean, log_std (..., n, H)."""
        if features.dim() < 2:
            raise ValueError(f"features must be (..., n, F), got {tuple(features.shape)}")
        if t_out.dim() != 1 or t_out.numel() < 1 or float(t_out[0]) <= 0 or bool((t_out.diff() <= 0).any()):
            raise ValueError("t_out must be (H,), positive and increasing")
        n = features.shape[-2]
        self.dynamics.graph = None
        if edge_index is not None and self.graph_coupling and edge_index.shape[1] > 0:
            _check_edge_index(edge_index, n)
            w = features.new_ones(edge_index.shape[1]) if edge_weight is None else edge_weight
            if w.shape != (edge_index.shape[1],):
                raise ValueError(f"edge_weight must be (E={edge_index.shape[1]},), got {tuple(w.shape)}")
            total = w.new_zeros(n).index_add(0, edge_index[1], w)
            self.dynamics.graph = (edge_index[0], edge_index[1], w / total.clamp(min=1e-6)[edge_index[1]])
        unit = t_out[-1].to(features.dtype) if self.time_unit is None else self.time_unit
        s_out = t_out.to(features.dtype) / unit
        grid = self._grid(s_out)
        z0 = self.init(features)
        try:
            path = odeint(self.dynamics, z0, grid, method="rk4")   # fixed steps on grid: (G, ..., n, D)
        finally:
            self.dynamics.graph = None
        z_out = path[torch.searchsorted(grid, s_out)]                         # (H, ..., n, D)
        mean = self.mean_head(z_out).squeeze(-1)
        log_std = self.log_std_head(z_out).squeeze(-1).clamp(_MIN_LOG_STD, _MAX_LOG_STD)
        return mean.movedim(0, -1), log_std.movedim(0, -1)


def gaussian_negative_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """-H[N(mean, std^2)] averaged over the forecast epochs: (n, H) -> (n,)."""
    return -(0.5 * (_LOG_2PI + 1.0) + log_std).mean(-1)


def gaussian_prior_cross_entropy(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """-E_{N(mean, std^2)}[log N(Y; 0, 1)] = 0.5 (log 2 pi + mean^2 + std^2), closed form, averaged
    over the forecast epochs: (n, H), (n, H) -> (n,)."""
    if mean.shape != log_std.shape:
        raise ValueError(f"mean and log_std must have one shape, got {tuple(mean.shape)} and {tuple(log_std.shape)}")
    return 0.5 * (_LOG_2PI + mean.pow(2) + (2.0 * log_std).exp()).mean(-1)


def squared_error(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over forecast epochs of (mean - target)^2: (n, H), (n, H) -> (n,)."""
    if mean.shape != target.shape:
        raise ValueError(f"target must be {tuple(mean.shape)}, got {tuple(target.shape)}")
    return (mean - target).pow(2).mean(-1)


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log N(target; mean, exp(log_std)^2) averaged over forecast epochs: (n, H) x 3 -> (n,)."""
    if not (mean.shape == log_std.shape == target.shape):
        raise ValueError(f"mean, log_std and target must have one shape, got {tuple(mean.shape)}, "
                         f"{tuple(log_std.shape)}, {tuple(target.shape)}")
    return (0.5 * _LOG_2PI + log_std + 0.5 * ((target - mean) * torch.exp(-log_std)).pow(2)).mean(-1)


# ---------------------------------------------------------------------------------------------
# 5-6. The model
# ---------------------------------------------------------------------------------------------

def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class Dapf(nn.Module):
    """DAPF forecaster (see the module docstring): GraphBatch -> (n, H) forecasts, normalised units.

    Hyperparameters: latent_dim M (W and the ODE state), hidden_units (flow coupling nets, GCN,
    decoders, z0 net), flow_layers (coupling layers), ode_hidden (dynamics MLP), ode_steps_per_horizon
    (rk4 steps over [0, t_out[-1]]; None: one per forecast epoch), graph_coupling (neighbour term in
    dz/dt), record_prior (forecast on top of ``batch.record``, step 5) and the loss weights listed
    in the module docstring.
    """

    def __init__(self, input_len: int, horizon: int, latent_dim: int = 16, hidden_units: int = 32,
                 flow_layers: int = 4, ode_hidden: int = 32, ode_steps_per_horizon: int | None = None,
                 graph_coupling: bool = True, kl_weight: float = 0.01, adjacency_weight: float = 0.1,
                 series_weight: float = 0.1, flow_weight: float = 0.01, entropy_weight: float = 0.01,
                 prior_weight: float = 0.01, mse_weight: float = 1.0, nll_weight: float = 1.0,
                 time_unit_years: float = 6.0 / 365.25, record_prior: bool = True):
        super().__init__()
        for name, value in (("input_len", input_len), ("horizon", horizon), ("latent_dim", latent_dim),
                            ("hidden_units", hidden_units), ("flow_layers", flow_layers), ("ode_hidden", ode_hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if ode_steps_per_horizon is not None and ode_steps_per_horizon < 1:
            raise ValueError(f"ode_steps_per_horizon must be >= 1 or None, got {ode_steps_per_horizon!r}")
        self.weights = {"kl_w": kl_weight, "adjacency": adjacency_weight, "series": series_weight,
                        "flow_nll": flow_weight, "entropy": entropy_weight, "prior": prior_weight,
                        "mse": mse_weight, "nll": nll_weight}
        for name, value in self.weights.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"the {name} weight must be finite and >= 0, got {value!r}")
        self.input_len, self.horizon, self.latent_dim = input_len, horizon, latent_dim
        self.record_prior = bool(record_prior)
        n_record = input_len + horizon if self.record_prior else 0     # batch.record as node features
        self.flow = RealNVP(FLOW_DIM, flow_layers, hidden_units, cond_dim=1)
        self.encoder = VgaeEncoder(3 + input_len + n_record, hidden_units, latent_dim)
        self.series_decoder = nn.Sequential(nn.Linear(latent_dim, hidden_units), nn.Tanh(),
                                            nn.Linear(hidden_units, input_len))
        # z0 sees W, the window and its epoch spacing (in time units): the forecast times are
        # physical, so a record whose cadence changes (6 -> 12 days) is integrated over its real span
        self.time_unit_years = float(time_unit_years)
        self.ode = OdeForecaster(latent_dim + input_len + 1 + n_record, latent_dim, ode_hidden,
                                 ode_steps_per_horizon, graph_coupling, time_unit=self.time_unit_years)
        if self.record_prior:      # the forecast starts as the record model's; training learns the departure
            nn.init.zeros_(self.ode.mean_head.weight)
            nn.init.zeros_(self.ode.mean_head.bias)

    # -- pieces ----------------------------------------------------------------------------------
    def _check(self, batch: GraphBatch, need_target: bool = False) -> None:
        if not isinstance(batch, GraphBatch):
            raise ValueError(f"batch must be a GraphBatch, got {type(batch).__name__}")
        if batch.input_len != self.input_len or batch.horizon != self.horizon:
            raise ValueError(f"batch has L={batch.input_len}, H={batch.horizon}; the model expects "
                             f"L={self.input_len}, H={self.horizon}")
        _check_edge_index(batch.edge_index, batch.n_nodes, "batch.edge_index")
        if need_target and batch.target is None:
            raise ValueError("batch.target is required for the loss")
        if self.record_prior and batch.record is None:
            raise ValueError("batch.record is required: this model forecasts on top of the record model "
                             "(record_prior=True)")

    def _prior(self, batch: GraphBatch) -> torch.Tensor | None:
        """The record model's forecast (n, H) the mean is added to, or None (record_prior off)."""
        return batch.record[:, batch.input_len:] if self.record_prior else None

    def _node_features(self, batch: GraphBatch) -> list[torch.Tensor]:
        """[history (n, L)] and, with record_prior, [record (n, L + H)]."""
        return [batch.history] + ([batch.record] if self.record_prior else [])

    def _flow_inputs(self, batch: GraphBatch):
        """x (n, L, 4) = [coords, history[:, tau]], cond (n, L, 1) = t_in[tau] / span in [-1, 0]."""
        n, L = batch.history.shape
        x = torch.cat([batch.coords.unsqueeze(1).expand(n, L, 3), batch.history.unsqueeze(-1)], dim=-1)
        span = (batch.t_in[-1] - batch.t_in[0]).clamp(min=1e-12) if L > 1 else batch.t_in.new_ones(())
        cond = (batch.t_in / span).view(1, L, 1).expand(n, L, 1)
        return x, cond

    def _encode(self, batch: GraphBatch) -> dict:
        x, cond = self._flow_inputs(batch)
        u, log_det = self.flow(x, cond)
        prob = dynamic_adjacency(u, batch.edge_index)                   # (E, L) p(A = 1)
        mean_prob = prob.mean(-1) if prob.shape[1] else prob.new_zeros(prob.shape[0])
        features = torch.cat([batch.coords, *self._node_features(batch)], dim=-1)
        mu, logvar = self.encoder(features, batch.edge_index, 2.0 * mean_prob)
        return {"u": u, "log_det": log_det, "mean_prob": mean_prob, "mu": mu, "logvar": logvar,
                "edge_weight": 2.0 * mean_prob}

    def _forecast(self, w: torch.Tensor, batch: GraphBatch, edge_weight: torch.Tensor):
        """(mean, log_std) (..., n, H) from W (..., n, M): the ODE's, its mean added to the record
        model's forecast with record_prior."""
        nodes = [f.expand(w.shape[:-1] + f.shape[-1:]) for f in self._node_features(batch)]
        span = (batch.t_in[-1] - batch.t_in[0]) / max(batch.input_len - 1, 1) / self.time_unit_years
        spacing = w.new_full(w.shape[:-1] + (1,), float(span))
        mean, log_std = self.ode(torch.cat([w, nodes[0], spacing, *nodes[1:]], dim=-1), batch.t_out,
                                 batch.edge_index, edge_weight)
        prior = self._prior(batch)
        return (mean if prior is None else mean + prior), log_std

    # -- public ----------------------------------------------------------------------------------
    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Flow embeddings u of every (node, input epoch) (Eq. 3, the paper's Fig. 2): (n, L, 4)."""
        self._check(batch)
        x, cond = self._flow_inputs(batch)
        return self.flow(x, cond)[0]

    def adjacency(self, batch: GraphBatch) -> torch.Tensor:
        """p(A_ij^tau = 1 | u_i^tau, u_j^tau) on batch.edge_index (Eq. 4): (E, L)."""
        return dynamic_adjacency(self.embed(batch), batch.edge_index)

    def edge_weights(self, batch: GraphBatch) -> torch.Tensor:
        """The GCN's and the ODE coupling's edge weights, 2 * mean_tau p(A_ij^tau = 1) in (0, 1]: (E,)."""
        self._check(batch)
        return self._encode(batch)["edge_weight"]

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Point forecast (n, H): mean of q(Y | W, S) at the posterior mean of W."""
        self._check(batch)
        enc = self._encode(batch)
        return self._forecast(enc["mu"], batch, enc["edge_weight"])[0]

    def loss(self, batch: GraphBatch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum over masked nodes of the per-node terms (module docstring); W is drawn from
        q(W) by reparameterisation with ``generator``.  Returns (total, {term: unweighted sum})."""
        self._check(batch, need_target=True)
        mask = batch.mask
        target = torch.where(mask.unsqueeze(-1), batch.target, torch.zeros_like(batch.target))
        enc = self._encode(batch)
        mu, logvar = enc["mu"], enc["logvar"]
        w = mu + torch.exp(0.5 * logvar) * _randn(mu.shape, mu, generator)
        mean, log_std = self._forecast(w, batch, enc["edge_weight"])
        prior = self._prior(batch)
        per_node = {
            "kl_w": kl_standard_normal(mu, logvar),
            "adjacency": adjacency_reconstruction_nll(w, batch.edge_index, enc["mean_prob"].detach()),
            "series": series_reconstruction_nll(self.series_decoder(w), batch.history),
            "flow_nll": flow_negative_log_likelihood(enc["u"], enc["log_det"]),
            "entropy": gaussian_negative_entropy(log_std),
            "prior": gaussian_prior_cross_entropy(mean if prior is None else mean - prior, log_std),
            "mse": squared_error(mean, target),
            "nll": gaussian_nll(mean, log_std, target),
        }
        total = mu.new_zeros(())
        terms = {}
        for name, values in per_node.items():
            s = torch.where(mask, values, torch.zeros_like(values)).sum()
            total = total + self.weights[name] * s
            terms[name] = float(s.detach())
        return total, terms

    def sample(self, batch: GraphBatch, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Predictive samples (n_samples, n, H): W ~ q(W), integrate, Y ~ N(mean, std^2)."""
        self._check(batch)
        if int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        enc = self._encode(batch)
        mu, logvar = enc["mu"], enc["logvar"]
        w = mu + torch.exp(0.5 * logvar) * _randn((n_samples,) + tuple(mu.shape), mu, generator)
        mean, log_std = self._forecast(w, batch, enc["edge_weight"])
        return mean + log_std.exp() * _randn(mean.shape, mean, generator)

    def predictive(self, batch: GraphBatch, w_samples: int = 0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (n, H), std (n, H)) of the predictive distribution in one pass: q(Y | W, S) at the
        posterior mean of W (``w_samples`` 0), or the moments of its mixture over ``w_samples``
        draws W ~ q(W) (mean of the means; mean variance plus the variance of the means)."""
        self._check(batch)
        if int(w_samples) != w_samples or w_samples < 0:
            raise ValueError(f"w_samples must be a non-negative integer, got {w_samples!r}")
        enc = self._encode(batch)
        mu, logvar = enc["mu"], enc["logvar"]
        if w_samples == 0:
            mean, log_std = self._forecast(mu, batch, enc["edge_weight"])
            return mean, log_std.exp()
        w = mu + torch.exp(0.5 * logvar) * _randn((w_samples,) + tuple(mu.shape), mu, generator)
        means, log_std = self._forecast(w, batch, enc["edge_weight"])
        mean = means.mean(0)
        variance = (torch.exp(2.0 * log_std) + means.square()).mean(0) - mean.square()
        return mean, variance.clamp(min=0.0).sqrt()


def build(name: str, input_len: int, horizon: int, **hyper) -> Dapf:
    """The model named ``name`` ("dapf" only) with hyperparameters ``hyper`` (Dapf's keywords)."""
    if name != "dapf":
        raise ValueError(f"unknown model {name!r}: this module builds 'dapf' only")
    allowed = set(inspect.signature(Dapf.__init__).parameters) - {"self", "input_len", "horizon"}
    unknown = sorted(set(hyper) - allowed)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) for dapf: {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(allowed))})")
    return Dapf(input_len, horizon, **hyper)
