"""A trained forecaster and its model files. Pure torch/numpy: no Spark here.

A model is a version in the model store, <lake>/models/forecast/<dataset>/<model>/<run_id>/:
``weights.pt`` (a state dict, loaded with ``weights_only=True``) and ``model.json`` (model name,
hyperparameters, window split, normalisation, epoch dates, training history, SHA-256 of the
weights, checked on load); the store's ``latest.json`` names the newest.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from insarlake.config import Config
from insarlake.errors import InputError
from insarlake.forecast.windows import Normalisation, WindowSplit
from insarlake.lake import model_store
from insarlake.modelstore import ModelStore, OutdatedModel

# 2: DAPF forecasts on top of the record model (hyper record_prior, default on); version 1 files
# (an empty hyper meant the seed's DAPF) are not reused: the model is trained anew.
FORMAT_VERSION = 2


def forecast_store(config: Config, dataset: str, name: str, spark=None) -> ModelStore:
    """The saved versions of forecaster ``name`` (dapf, gru, ...) of ``dataset``."""
    return model_store(config, "forecast", dataset, name, spark)


def build_network(name: str, split: WindowSplit, hyper: dict) -> torch.nn.Module:
    from insarlake.forecast import baselines, dapf

    build = dapf.build if name == "dapf" else baselines.build
    return build(name, split.input_len, split.horizon, **hyper)


def forecast_distribution(network: torch.nn.Module, batch, quantiles, w_samples: int, samples: int,
                          generator: torch.Generator | None = None, std_scale: float = 1.0):
    """(mean (n, H), quantiles (len(quantiles), n, H) or None) of a network's forecast, numpy,
    normalised units: the mean and Gaussian quantiles of ``network.predictive`` (DAPF: one pass, or
    ``w_samples`` draws of W) with its std times ``std_scale`` (the model's validation calibration,
    ``ForecastModel.interval_scale``); else the point forecast and the empirical quantiles of
    ``samples`` draws of ``network.sample``; else the point forecast and None."""
    import numpy as np
    from scipy.stats import norm

    with torch.no_grad():
        if hasattr(network, "predictive"):
            mean, std = network.predictive(batch, w_samples, generator)
            std = std * float(std_scale)
            z = torch.as_tensor(norm.ppf(np.asarray(quantiles, np.float64)), dtype=mean.dtype)
            return mean.numpy(), (mean.unsqueeze(0) + z.view(-1, 1, 1) * std.unsqueeze(0)).numpy()
        mean = network(batch).numpy()
        if hasattr(network, "sample"):
            return mean, np.quantile(network.sample(batch, samples, generator).numpy(), quantiles, axis=0)
    return mean, None


@dataclass
class ForecastModel:
    name: str
    hyper: dict
    split: WindowSplit
    norm: Normalisation
    epoch_dates: list
    network: torch.nn.Module
    training: dict = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, hyper: dict, split: WindowSplit, norm: Normalisation, dates: list,
               result: dict) -> "ForecastModel":
        """From a ``train_worker`` result (best weights, history, seconds)."""
        network = build_network(name, split, hyper)
        network.load_state_dict(result["state_dict"])
        network.eval()
        training = {k: result.get(k) for k in ("history", "best_epoch", "seconds", "world_size", "interval_scale")}
        return cls(name, dict(hyper), split, norm, list(dates), network, training)

    def same_settings(self, name: str, hyper: dict, split: WindowSplit) -> bool | str:
        """True when this is model ``name`` with these hyperparameters and the window split the
        settings give on its own epochs (``split``); else why not. Its epochs are the reuse
        policy's (reuse.py); its normalisation serves whatever run reuses it."""
        if self.name != name or self.hyper != dict(hyper):
            return "other model or hyperparameters"
        return True if self.split == split else f"other window split ({self.split} vs {split})"

    @property
    def interval_scale(self) -> float:
        """The factor on the predictive std fitted on the validation windows (1: none)."""
        return float(self.training.get("interval_scale") or 1.0)

    def meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "model": self.name, "hyper": self.hyper,
                "split": self.split.as_dict(), "normalisation": self.norm.as_dict(),
                "epoch_dates": list(self.epoch_dates), "training": self.training}

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / "weights.pt"
        torch.save(self.network.state_dict(), weights)
        meta = {**self.meta(), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
        (folder / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "ForecastModel":
        folder = Path(folder)
        meta_path, weights = folder / "model.json", folder / "weights.pt"
        try:
            meta = json.loads(meta_path.read_text())
            expected = meta["weights_sha256"]
        except FileNotFoundError:
            raise InputError(f"model file {meta_path}: not found") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"model file {meta_path}: not a valid forecaster description ({exc})") from None
        if not weights.is_file():
            raise InputError(f"model file {weights}: not found")
        data = weights.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise InputError(f"model file {weights}: SHA-256 differs from model.json (corrupted or replaced)")
        return cls.from_payload({"meta": meta, "weights": data}, str(meta_path))

    def to_payload(self) -> dict:
        """A picklable copy (sent to Spark workers): meta and the weights' bytes."""
        buffer = io.BytesIO()
        torch.save(self.network.state_dict(), buffer)
        return {"meta": self.meta(), "weights": buffer.getvalue()}

    @classmethod
    def from_payload(cls, payload: dict, where: str = "forecast model") -> "ForecastModel":
        meta = payload["meta"]
        if isinstance(meta, dict) and meta.get("format_version") in range(1, FORMAT_VERSION):
            raise OutdatedModel(f"{where}: format_version {meta['format_version']} of an older insarlake, "
                                f"expected {FORMAT_VERSION}")
        try:
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
            split = WindowSplit(**meta["split"])
            norm_d = meta["normalisation"]
            norm = Normalisation(float(norm_d["scale_mm"]), tuple(norm_d["coord_mean"]), tuple(norm_d["coord_std"]))
            network = build_network(meta["model"], split, meta["hyper"])
            network.load_state_dict(torch.load(io.BytesIO(payload["weights"]), map_location="cpu", weights_only=True))
        except Exception as exc:   # torch and the constructors raise several types for bad files
            raise InputError(f"{where}: cannot be loaded ({str(exc).splitlines()[0]})") from None
        network.eval()
        return cls(meta["model"], dict(meta["hyper"]), split, norm, list(meta["epoch_dates"]), network,
                   meta.get("training", {}))
