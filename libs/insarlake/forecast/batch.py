"""The one input every forecaster takes: a (sub)graph of pixels with one input window each.

Shapes: n nodes, L input epochs, H forecast epochs, E directed edges.

* coords (n, 3) float32: standardised (x_km, y_km, height_m) of each pixel (zero mean, unit std
  over the dataset).
* history (n, L) float32: the input window's LOS displacement minus its last value, divided by
  the dataset's ``scale_mm`` (so ``history[:, -1] == 0``).
* t_in (L,) float32: input epoch times in years relative to the last input epoch (<= 0, last is 0).
* t_out (H,) float32: forecast epoch times in years after the last input epoch (> 0, increasing).
* edge_index (2, E) int64: local node indices; every undirected edge appears in both directions;
  no self loops (models add their own).
* target (n, H) float32 or None: future displacement minus the last input value, / ``scale_mm``.
* mask (n,) bool: nodes whose loss and forecasts count (halo nodes, present only so that border
  nodes see their neighbours, are False).
* record (n, L + H) float32 or None: the whole record's model (``harmonic_trend``'s trend plus
  annual sinusoid, fitted on every epoch before the forecast origin) at the input and forecast
  epochs, minus the last input value, / ``scale_mm``: what a pixel's full past says, beyond the window.

Forecasts in mm are ``last_value_mm + prediction * scale_mm``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class GraphBatch:
    coords: torch.Tensor
    history: torch.Tensor
    t_in: torch.Tensor
    t_out: torch.Tensor
    edge_index: torch.Tensor
    target: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    record: Optional[torch.Tensor] = None

    def __post_init__(self):
        n = self.coords.shape[0]
        if self.coords.shape != (n, 3):
            raise ValueError(f"coords must be (n, 3), got {tuple(self.coords.shape)}")
        if self.history.dim() != 2 or self.history.shape[0] != n:
            raise ValueError(f"history must be (n={n}, L), got {tuple(self.history.shape)}")
        if self.t_in.shape != (self.history.shape[1],):
            raise ValueError(f"t_in must be (L={self.history.shape[1]},), got {tuple(self.t_in.shape)}")
        if self.t_out.dim() != 1 or self.t_out.numel() < 1:
            raise ValueError(f"t_out must be (H,), got {tuple(self.t_out.shape)}")
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be (2, E), got {tuple(self.edge_index.shape)}")
        if self.target is not None and self.target.shape != (n, self.t_out.numel()):
            raise ValueError(f"target must be (n={n}, H={self.t_out.numel()}), got {tuple(self.target.shape)}")
        if self.mask is None:
            self.mask = torch.ones(n, dtype=torch.bool)
        elif self.mask.shape != (n,):
            raise ValueError(f"mask must be (n={n},), got {tuple(self.mask.shape)}")
        span = self.history.shape[1] + self.t_out.numel()
        if self.record is not None and self.record.shape != (n, span):
            raise ValueError(f"record must be (n={n}, L + H={span}), got {tuple(self.record.shape)}")

    @property
    def n_nodes(self) -> int:
        return int(self.coords.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.t_out.numel())

    @property
    def input_len(self) -> int:
        return int(self.history.shape[1])
