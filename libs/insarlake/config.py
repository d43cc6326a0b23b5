"""Typed, validated configuration.

The defaults live in one place, ``conf/default.yaml`` (shipped inside the package as
``insarlake/default.yaml``); a profile file and ``--set key=value`` overrides are merged on top.
Every key must exist in the defaults and every value must have the default's type, so a typo or a
wrong type stops the job with the key's dotted name.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import math
from dataclasses import dataclass, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional, get_args, get_origin, get_type_hints

import yaml

from insarlake.classify import ARCHITECTURES
from insarlake.errors import ConfigError, first_line
from insarlake.ingest.parse import INPUT_FORMATS, UNIT_TO_MM
from insarlake.names import dataset_problem, identifier_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkConfig:
    master: Optional[str]
    remote: Optional[str]
    app_name: str
    shuffle_partitions: int
    driver_memory: str
    jars: str
    jars_dir: str
    conf: dict


@dataclass(frozen=True)
class LakeConfig:
    path: str
    run_heartbeat_s: float
    run_lost_after_s: float


@dataclass(frozen=True)
class ModelsConfig:
    mlflow: str
    mlflow_experiment: str


@dataclass(frozen=True)
class CatalogConfig:
    database: str
    kind: str
    server: str


@dataclass(frozen=True)
class SimulateConfig:
    seed: int
    n_pixels: int
    center_lon: float
    center_lat: float
    width_km: float
    height_km: float
    tile_km: float
    start_date: str
    end_date: str
    cadence_days: int
    cadence_change_date: Optional[str]
    cadence_after_days: int
    acquisition_gap_share: float
    urban_patches: int
    urban_radius_km: float
    urban_pixel_share: float
    terrain_relief_m: float
    base_height_m: float
    incidence_near_deg: float
    incidence_far_deg: float
    track_angle_deg: float
    wavelength_mm: float
    sources: dict
    atmosphere_sigma_mm: float
    atmosphere_scale_km: float
    atmosphere_waves: int
    stratified_mm_per_km: float
    looks: int
    unwrap_error_share: float
    missing_share: float
    truth_min_mm: float


@dataclass(frozen=True)
class IngestConfig:
    format: str
    max_missing_share: float
    displacement_unit: str
    split_tracks: bool
    overlap_distance_m: float
    overlap_max_rms_mm: float
    append_max_difference_mm: float


@dataclass(frozen=True)
class PartitionConfig:
    min_precision: int
    max_precision: int
    max_pixels_per_tile: int
    pixels_per_file: int


@dataclass(frozen=True)
class TemporalConfig:
    metric: str
    gamma: float
    preprocessing: str
    k: Optional[int]
    k_min: int
    k_max: int
    sample_size: int
    silhouette_size: int
    max_iter: int
    max_iter_barycenter: int
    seed: int
    reuse_model: bool
    write_distance: bool


@dataclass(frozen=True)
class CovariogramConfig:
    pairs: int
    local_share: float
    local_precision: int
    bin_km: float
    max_distance_km: float
    fraction: float
    seed: int
    pixels_per_pair: float


@dataclass(frozen=True)
class SpatialConfig:
    eps_m: Optional[float]
    eps_correlation_factor: float
    min_samples: int
    per_label: dict
    min_precision: int
    max_precision: int
    max_points_per_tile: int
    map_max_points: int


@dataclass(frozen=True)
class ClassifyConfig:
    models: list
    predict_with: str
    target: str
    noise_as_class: bool
    train_share: float
    split_seed: int
    class_weight_power: float
    max_train_pixels_per_class: Optional[int]
    max_train_pixels: Optional[int]
    max_validation_pixels: Optional[int]
    max_evaluation_pixels: Optional[int]
    lstm_units: list
    perceptron_units: list
    dense_units: list
    dropout: float
    batch_size: int
    learning_rate: float
    max_epochs: int
    patience: int
    seed: int
    shards: int
    num_processes: int
    local_mode: bool
    use_gpu: bool
    threads_per_process: int
    threshold: float
    inference_batch_size: int
    network_batch_rows: int
    retrain: bool


@dataclass(frozen=True)
class HotspotsConfig:
    labels: str
    method: str
    max_standard_distance_km: Optional[float]
    standard_distance_factor: float
    min_pixels: int
    noise_velocity_mm_yr: Optional[float]
    z_pixel: float
    z_hotspot: float
    split_level_ratio: Optional[float]
    eps_m: Optional[float]
    eps_correlation_factor: float
    min_samples: int
    ellipse_n_std: float
    score_methods: list
    min_source_pixels: int
    min_jaccard: float
    map_max_points: int


@dataclass(frozen=True)
class ForecastConfig:
    models: list
    evaluate: bool
    input_epochs: int
    horizon_epochs: int
    train_share: float
    validation_share: float
    graph_k: int
    graph_max_distance_m: float
    graph_cell_km: float
    nodes_per_subgraph: int
    halo_hops: int
    pixels_per_task: int
    train_subgraphs: int
    batch_parts: int
    windows_per_part: int
    learning_rate: float
    max_epochs: int
    patience: int
    seed: int
    num_processes: int
    local_mode: bool
    use_gpu: bool
    threads_per_process: int
    samples: int
    predict_samples: int
    calibrate_interval: bool
    hyper: dict
    retrain: bool
    plot_pixels: int
    moving_mm_yr: float
    monitoring_horizon_days: Optional[float]


@dataclass(frozen=True)
class Config:
    dataset: str
    spark: SparkConfig
    lake: LakeConfig
    models: ModelsConfig
    catalog: CatalogConfig
    simulate: SimulateConfig
    ingest: IngestConfig
    partition: PartitionConfig
    temporal: TemporalConfig
    covariogram: CovariogramConfig
    spatial: SpatialConfig
    classify: ClassifyConfig
    hotspots: HotspotsConfig
    forecast: ForecastConfig

    def as_dict(self) -> dict:
        return _to_plain(self)

    @property
    def hash(self) -> str:
        """sha256 (first 16 hex) of the canonical JSON of the effective config."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Values a key may take, beyond its type.
_CHOICES = {
    "catalog.kind": ("embedded", "server", "session"),
    "models.mlflow": ("auto", "always", "never"),
    "ingest.format": INPUT_FORMATS,
    "ingest.displacement_unit": tuple(UNIT_TO_MM),
    "temporal.metric": ("softdtw", "dtw", "euclidean"),
    "temporal.preprocessing": ("none", "demean", "znorm"),
    "classify.target": ("cluster", "tskm"),
}
_KNOWN_SOURCE_KINDS = ("subsidence", "uplift", "landslide", "tunnel", "postseismic")


def default_config_text() -> str:
    """The text of the packaged default configuration (conf/default.yaml)."""
    return resources.files("insarlake").joinpath("default.yaml").read_text()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← optional profile file ← ``key=value`` overrides, validated into a Config."""
    data = yaml.safe_load(default_config_text())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p}: not found")
        try:
            profile = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p}: not valid YAML ({first_line(exc)})") from None
        if not isinstance(profile, dict):
            raise ConfigError(f"config file {p}: must be a mapping of sections, got {type(profile).__name__}")
        data = _merge(data, profile, prefix="", origin=str(p))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. simulate.n_pixels=5000")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        data = _merge(data, _nest(key.strip().split("."), value), prefix="", origin="--set")
    return _build(Config, data, prefix="")


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _merge(base: dict, update: Mapping, prefix: str, origin: str) -> dict:
    """Recursive merge; keys of ``update`` must exist in ``base`` (free-form dicts excepted)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            raise ConfigError(f"{origin}: unknown config key '{dotted}'")
        if isinstance(out[key], dict) and dotted not in _FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: config key '{dotted}' must be a mapping, got {value!r}")
            out[key] = _merge(out[key], value, prefix=f"{dotted}.", origin=origin)
        else:
            out[key] = value
    return out


# dict-valued keys whose entries are free (not checked against the defaults).
_FREE_FORM = {"spark.conf", "spatial.per_label"}


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    kwargs = {}
    for f in fields(cls):
        dotted = f"{prefix}{f.name}"
        if f.name not in data:
            raise ConfigError(f"missing config key '{dotted}'")
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], dotted)
    obj = cls(**kwargs)
    _check(obj, prefix)
    return obj


def _coerce(tp, value: Any, dotted: str):
    if is_dataclass(tp):
        return _build(tp, value, prefix=f"{dotted}.")
    if get_origin(tp) is Optional or (get_origin(tp) is not None and type(None) in get_args(tp)):
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(inner, value, dotted)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{dotted}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{dotted}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, dt.date):  # YAML reads an unquoted 2020-01-05 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"config key '{dotted}' must be a string, got {value!r}")
        return value
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{dotted}' must be a list, got {value!r}")
        return list(value)
    if tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{dotted}' must be a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {tp} for {dotted}")  # programming error


def _check(obj, prefix: str) -> None:
    """Value checks beyond types: choices, ranges, cross-field rules."""
    for f in fields(obj):
        dotted = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dotted in _CHOICES and value not in _CHOICES[dotted]:
            raise ConfigError(f"config key '{dotted}' must be one of {', '.join(_CHOICES[dotted])}; got {value!r}")
    if isinstance(obj, SimulateConfig):
        _check_simulate(obj)
    if isinstance(obj, IngestConfig) and not 0.0 <= obj.max_missing_share <= 1.0:
        raise ConfigError(f"config key 'ingest.max_missing_share' must be within [0, 1]; got {obj.max_missing_share}")
    if isinstance(obj, IngestConfig) and not obj.append_max_difference_mm >= 0:
        raise ConfigError("config key 'ingest.append_max_difference_mm' must be >= 0; "
                          f"got {obj.append_max_difference_mm}")
    if isinstance(obj, PartitionConfig):
        if not 1 <= obj.min_precision <= obj.max_precision <= 12:
            raise ConfigError("config keys 'partition.min_precision' <= 'partition.max_precision' must lie in 1..12")
        for key in ("max_pixels_per_tile", "pixels_per_file"):
            if getattr(obj, key) < 1:
                raise ConfigError(f"config key 'partition.{key}' must be >= 1")
    if isinstance(obj, LakeConfig):
        from insarlake.files import LakeFiles

        LakeFiles(obj.path)                 # a scheme no file system serves: one line naming it
        if not (0 < obj.run_heartbeat_s and 2 * obj.run_heartbeat_s <= obj.run_lost_after_s < math.inf):
            raise ConfigError("config keys 'lake.run_heartbeat_s' > 0 and 'lake.run_lost_after_s' >= twice it (finite) are "
                              f"required; got {obj.run_heartbeat_s} and {obj.run_lost_after_s}")
    if isinstance(obj, SparkConfig):
        if obj.remote is not None and not str(obj.remote).startswith("sc://"):
            raise ConfigError(f"config key 'spark.remote' must be a Spark Connect URL sc://host:port; got {obj.remote!r}")
        for k, v in obj.conf.items():
            if not isinstance(v, (str, int, float, bool)):
                raise ConfigError(f"config key 'spark.conf.{k}' must be a scalar, got {v!r}")
    if isinstance(obj, TemporalConfig):
        if obj.gamma <= 0:
            raise ConfigError(f"config key 'temporal.gamma' must be > 0; got {obj.gamma}")
        if not 2 <= obj.k_min <= obj.k_max:
            raise ConfigError("config keys 'temporal.k_min' <= 'temporal.k_max' must be >= 2")
        if obj.k is not None and obj.k < 1:
            raise ConfigError(f"config key 'temporal.k' must be >= 1 or null; got {obj.k}")
        for key in ("sample_size", "silhouette_size", "max_iter", "max_iter_barycenter"):
            if getattr(obj, key) < 1:
                raise ConfigError(f"config key 'temporal.{key}' must be >= 1")
    if isinstance(obj, CovariogramConfig):
        if obj.pairs < 1 or obj.bin_km <= 0 or obj.max_distance_km <= obj.bin_km:
            raise ConfigError("config keys 'covariogram.pairs' >= 1 and 0 < 'covariogram.bin_km' < "
                              "'covariogram.max_distance_km' are required")
        if not 0.0 <= obj.local_share <= 1.0 or not 0.0 < obj.fraction < 1.0:
            raise ConfigError("config keys 'covariogram.local_share' in [0, 1] and 'covariogram.fraction' in (0, 1) are required")
        if not 1 <= obj.local_precision <= 12:
            raise ConfigError("config key 'covariogram.local_precision' must lie in 1..12")
        if not obj.pixels_per_pair > 0:
            raise ConfigError(f"config key 'covariogram.pixels_per_pair' must be > 0; got {obj.pixels_per_pair}")
    if isinstance(obj, SpatialConfig):
        _check_spatial(obj)
    if isinstance(obj, ClassifyConfig):
        _check_classify(obj)
    if isinstance(obj, HotspotsConfig):
        _check_hotspots(obj)
    if isinstance(obj, ForecastConfig):
        _check_forecast(obj)
    if isinstance(obj, Config) and (problem := dataset_problem(obj.dataset)):
        raise ConfigError(f"config key 'dataset' {problem}; got {obj.dataset!r}")
    if isinstance(obj, CatalogConfig) and (problem := identifier_problem(obj.database)):
        raise ConfigError(f"config key 'catalog.database' {problem}; got {obj.database!r}")
    if isinstance(obj, CatalogConfig):
        host, _, port = obj.server.rpartition(":")
        if not (host and port.isdigit() and 0 < int(port) < 65536 and host.strip() == host):
            raise ConfigError(f"config key 'catalog.server' must be host:port; got {obj.server!r}")


def _check_spatial(sp: SpatialConfig) -> None:
    def eps_ok(value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 2_000_000:
            raise ConfigError(f"config key '{key}' must be a distance in metres in (0, 2000000]; got {value!r}")

    def samples_ok(value, key):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config key '{key}' must be an integer >= 1; got {value!r}")

    if sp.eps_m is not None:
        eps_ok(sp.eps_m, "spatial.eps_m")
    if not sp.eps_correlation_factor > 0:
        raise ConfigError(f"config key 'spatial.eps_correlation_factor' must be > 0; got {sp.eps_correlation_factor}")
    samples_ok(sp.min_samples, "spatial.min_samples")
    for label, entry in sp.per_label.items():
        key = f"spatial.per_label.{label}"
        if isinstance(label, bool) or not isinstance(label, int):
            raise ConfigError(f"config key '{key}': labels must be integers (TSKM labels); got {label!r}")
        if not isinstance(entry, Mapping) or not entry or set(entry) - {"eps_m", "min_samples"}:
            raise ConfigError(f"config key '{key}' must be a mapping with eps_m and/or min_samples; got {entry!r}")
        if "eps_m" in entry:
            eps_ok(entry["eps_m"], f"{key}.eps_m")
        if "min_samples" in entry:
            samples_ok(entry["min_samples"], f"{key}.min_samples")
    if not 1 <= sp.min_precision <= sp.max_precision <= 12:
        raise ConfigError("config keys 'spatial.min_precision' <= 'spatial.max_precision' must lie in 1..12")
    for key in ("max_points_per_tile", "map_max_points"):
        if getattr(sp, key) < 1:
            raise ConfigError(f"config key 'spatial.{key}' must be >= 1")


HOTSPOT_METHODS = ("significant", "seed", "velocity_threshold")


def _check_hotspots(h: HotspotsConfig) -> None:
    if h.labels not in ("classes", "clusters"):
        raise ConfigError(f"config key 'hotspots.labels' must be 'classes' or 'clusters'; got {h.labels!r}")
    for key, value in (("method", h.method), *((f"score_methods[{i}]", m) for i, m in enumerate(h.score_methods))):
        if value not in HOTSPOT_METHODS:
            raise ConfigError(f"config key 'hotspots.{key}' must be one of {', '.join(HOTSPOT_METHODS)}; got {value!r}")
    for key in ("max_standard_distance_km", "noise_velocity_mm_yr", "eps_m"):
        value = getattr(h, key)
        if value is not None and not value > 0:
            raise ConfigError(f"config key 'hotspots.{key}' must be > 0 or null; got {value}")
    for key in ("standard_distance_factor", "z_pixel", "z_hotspot", "eps_correlation_factor", "ellipse_n_std"):
        if not getattr(h, key) > 0:
            raise ConfigError(f"config key 'hotspots.{key}' must be > 0; got {getattr(h, key)}")
    for key in ("min_pixels", "min_samples", "min_source_pixels", "map_max_points"):
        if getattr(h, key) < 1:
            raise ConfigError(f"config key 'hotspots.{key}' must be >= 1; got {getattr(h, key)}")
    if h.split_level_ratio is not None and not h.split_level_ratio > 1:
        raise ConfigError(f"config key 'hotspots.split_level_ratio' must be > 1 or null; got {h.split_level_ratio}")
    if not 0 < h.min_jaccard <= 1:
        raise ConfigError(f"config key 'hotspots.min_jaccard' must be within (0, 1]; got {h.min_jaccard}")


def _check_forecast(f: ForecastConfig) -> None:
    from insarlake.forecast import NEURAL_MODELS

    if "dapf" not in f.models or any(m not in NEURAL_MODELS for m in f.models) or len(set(f.models)) != len(f.models):
        raise ConfigError(f"config key 'forecast.models' must list distinct models of {', '.join(NEURAL_MODELS)}, "
                          f"dapf included; got {f.models!r}")
    for key in ("input_epochs", "horizon_epochs", "graph_k", "nodes_per_subgraph", "pixels_per_task",
                "train_subgraphs", "batch_parts",
                "windows_per_part", "max_epochs", "patience", "num_processes", "threads_per_process", "samples",
                "plot_pixels"):
        if getattr(f, key) < 1:
            raise ConfigError(f"config key 'forecast.{key}' must be >= 1; got {getattr(f, key)}")
    if f.input_epochs < 2:
        raise ConfigError(f"config key 'forecast.input_epochs' must be >= 2; got {f.input_epochs}")
    if f.halo_hops < 0:
        raise ConfigError(f"config key 'forecast.halo_hops' must be >= 0; got {f.halo_hops}")
    if f.predict_samples < 0:
        raise ConfigError(f"config key 'forecast.predict_samples' must be >= 0; got {f.predict_samples}")
    if not (0 < f.train_share < 1 and 0 < f.validation_share < 1 and f.train_share + f.validation_share < 1):
        raise ConfigError("config keys 'forecast.train_share' and 'forecast.validation_share' must be in (0, 1) "
                          f"with a sum below 1 (the rest is the test part); got {f.train_share}, {f.validation_share}")
    for key in ("graph_max_distance_m", "learning_rate"):
        if not getattr(f, key) > 0:
            raise ConfigError(f"config key 'forecast.{key}' must be > 0; got {getattr(f, key)}")
    if not f.moving_mm_yr >= 0:
        raise ConfigError(f"config key 'forecast.moving_mm_yr' must be >= 0; got {f.moving_mm_yr}")
    if f.monitoring_horizon_days is not None and not f.monitoring_horizon_days > 0:
        raise ConfigError(f"config key 'forecast.monitoring_horizon_days' must be > 0 or null; "
                          f"got {f.monitoring_horizon_days}")
    if not f.graph_cell_km * 1000.0 >= (f.halo_hops + 1) * f.graph_max_distance_m:
        raise ConfigError(f"config key 'forecast.graph_cell_km' must be >= (halo_hops + 1) x graph_max_distance_m "
                          f"/ 1000 = {(f.halo_hops + 1) * f.graph_max_distance_m / 1000:g} (a cell's subgraphs and "
                          f"halos are built from its neighbouring cells); got {f.graph_cell_km}")
    for name, params in f.hyper.items():
        if name not in NEURAL_MODELS or not isinstance(params, Mapping):
            raise ConfigError(f"config key 'forecast.hyper.{name}' must be a mapping of hyperparameters of one of "
                              f"{', '.join(NEURAL_MODELS)}; got {params!r}")


def _check_classify(c: ClassifyConfig) -> None:
    if not c.models or any(m not in ARCHITECTURES for m in c.models) or len(set(c.models)) != len(c.models):
        raise ConfigError(f"config key 'classify.models' must list distinct models of {', '.join(ARCHITECTURES)}; "
                          f"got {c.models!r}")
    if c.predict_with != "best" and c.predict_with not in c.models:
        raise ConfigError(f"config key 'classify.predict_with' must be 'best' or one of classify.models; "
                          f"got {c.predict_with!r}")
    for key in ("lstm_units", "perceptron_units", "dense_units"):
        units = getattr(c, key)
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units) or (key == "lstm_units" and not units):
            raise ConfigError(f"config key 'classify.{key}' must be a list of positive integers; got {units!r}")
    if not 0.0 < c.train_share < 1.0:
        raise ConfigError(f"config key 'classify.train_share' must be within (0, 1); got {c.train_share}")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"config key 'classify.dropout' must be within [0, 1); got {c.dropout}")
    if not 0.0 <= c.threshold <= 1.0:
        raise ConfigError(f"config key 'classify.threshold' must be within [0, 1]; got {c.threshold}")
    if not 0.0 <= c.class_weight_power <= 1.0:
        raise ConfigError(f"config key 'classify.class_weight_power' must be within [0, 1]; got {c.class_weight_power}")
    if c.learning_rate <= 0:
        raise ConfigError(f"config key 'classify.learning_rate' must be > 0; got {c.learning_rate}")
    for key in ("batch_size", "max_epochs", "patience", "shards", "num_processes", "threads_per_process",
                "inference_batch_size", "network_batch_rows"):
        if getattr(c, key) < 1:
            raise ConfigError(f"config key 'classify.{key}' must be >= 1")
    for key in ("max_train_pixels_per_class", "max_train_pixels", "max_validation_pixels", "max_evaluation_pixels"):
        if getattr(c, key) is not None and getattr(c, key) < 1:
            raise ConfigError(f"config key 'classify.{key}' must be >= 1 or null; got {getattr(c, key)}")
    if c.batch_size % c.shards:
        raise ConfigError(f"config key 'classify.batch_size' ({c.batch_size}) must be a multiple of "
                          f"'classify.shards' ({c.shards})")
    if c.shards < c.num_processes:
        raise ConfigError(f"config key 'classify.shards' ({c.shards}) must be >= 'classify.num_processes' "
                          f"({c.num_processes}): every process reads its own shards")


def _check_simulate(sim: SimulateConfig) -> None:
    def positive(key):
        if getattr(sim, key) <= 0:
            raise ConfigError(f"config key 'simulate.{key}' must be > 0; got {getattr(sim, key)}")

    def share(key):
        if not 0.0 <= getattr(sim, key) < 1.0:
            raise ConfigError(f"config key 'simulate.{key}' must be within [0, 1); got {getattr(sim, key)}")

    for key in ("n_pixels", "width_km", "height_km", "tile_km", "cadence_days", "cadence_after_days",
                "urban_radius_km", "atmosphere_scale_km", "atmosphere_waves", "looks", "wavelength_mm"):
        positive(key)
    for key in ("acquisition_gap_share", "urban_pixel_share", "unwrap_error_share", "missing_share"):
        share(key)
    if not (-180 <= sim.center_lon <= 180 and -85 <= sim.center_lat <= 85):
        raise ConfigError("config keys 'simulate.center_lon'/'simulate.center_lat' out of range")
    dates = {}
    for key in ("start_date", "end_date", "cadence_change_date"):
        value = getattr(sim, key)
        if value is None:
            continue
        try:
            dates[key] = dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"config key 'simulate.{key}' must be a YYYY-MM-DD date; got {value!r}") from None
    if dates["end_date"] <= dates["start_date"]:
        raise ConfigError("config key 'simulate.end_date' must be after 'simulate.start_date'")
    for kind, count in sim.sources.items():
        if kind not in _KNOWN_SOURCE_KINDS:
            raise ConfigError(f"unknown config key 'simulate.sources.{kind}' (kinds: {', '.join(_KNOWN_SOURCE_KINDS)})")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"config key 'simulate.sources.{kind}' must be an integer >= 0; got {count!r}")


def _to_plain(obj):
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj
