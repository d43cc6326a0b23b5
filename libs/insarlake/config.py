"""Typed, validated configuration (pydantic models, one per section of the YAML).

The defaults live in one place, ``conf/default.yaml`` (shipped inside the package as
``insarlake/default.yaml``); a profile file and ``--set key=value`` overrides are merged on top.
Every key must exist in the defaults and every value must have the default's type and range, so a
typo or a wrong value stops the job with one line naming the key's dotted name
(``config key 'temporal.gamma' must be > 0; got -1``). ``replace`` changes keys of a loaded
config and validates the result the same way.

This module imports no stage: the names a choice key may take (classifier architectures,
forecast models, input formats, ...) are defined here, and the stages take them from here.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Mapping, Optional, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Required, TypedDict

from insarlake.errors import ConfigError, first_line
from insarlake.names import dataset_problem, identifier_problem

log = logging.getLogger(__name__)

# What the choice keys may name. The stages build their registries from these.
CATALOG_KINDS = ("embedded", "server", "session")
MLFLOW_MODES = ("auto", "always", "never")
INPUT_FORMATS = ("auto", "egms", "wide-csv", "parquet")
DISPLACEMENT_UNITS = ("mm", "cm", "m")
SOURCE_KINDS = ("subsidence", "uplift", "landslide", "tunnel", "postseismic")
TEMPORAL_METRICS = ("softdtw", "dtw", "euclidean")
PREPROCESSINGS = ("none", "demean", "znorm")
CLASSIFY_TARGETS = ("cluster", "tskm")
CLASSIFIER_ARCHITECTURES = ("lstm", "lstm_perceptron")       # the seed's Table 1
HOTSPOT_LABELS = ("classes", "clusters")
HOTSPOT_METHODS = ("significant", "seed", "velocity_threshold")
FORECAST_NEURAL_MODELS = ("dapf", "gru", "latent_ode", "gcn_gru")   # the first is the product's forecaster


# -- value types: each names its rule once; the errors come out as "config key '<key>' <rule>"

def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return check


def _within(low: float, high: float, closed: str = "[]") -> Callable[[float], float]:
    """An interval rule, closed or open at each end: closed "[]", "[)", "(]" or "()"."""
    def check(value: float) -> float:
        above = value >= low if closed[0] == "[" else value > low
        below = value <= high if closed[1] == "]" else value < high
        if not (above and below):
            raise ValueError(f"must be within {closed[0]}{low:g}, {high:g}{closed[1]}")
        return value
    return check


def _iso_date(value: str) -> str:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a YYYY-MM-DD date") from None
    return value


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536 and host.strip() == host):
        raise ValueError("must be host:port")
    return value


def _spark_connect_url(value: str) -> str:
    if not value.startswith("sc://"):
        raise ValueError("must be a Spark Connect URL sc://host:port")
    return value


def _scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError("must be a scalar")
    return value


def _date_as_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value   # YAML reads 2020-01-05 as a date


def _choice(choices: tuple[str, ...]):
    return Annotated[str, AfterValidator(_one_of(choices))]


Text = Annotated[str, BeforeValidator(_date_as_text)]
Date = Annotated[Text, AfterValidator(_iso_date)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Share = Annotated[float, AfterValidator(_within(0, 1))]
Precision = Annotated[int, Field(ge=1, le=12)]                     # geohash characters
EpsM = Annotated[float, Field(gt=0, le=2_000_000)]                  # a DBSCAN distance, metres
Units = list[Annotated[int, Field(ge=1)]]                           # layer widths of a network


class _Section(BaseModel):
    """A section of the config: no unknown keys, no silent type conversions, frozen."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    key: ClassVar[str] = ""          # the section's dotted name, for errors of ``replace``


class SparkConfig(_Section):
    key: ClassVar[str] = "spark"
    master: Optional[Text]
    remote: Optional[Annotated[Text, AfterValidator(_spark_connect_url)]]
    app_name: Text
    shuffle_partitions: Count
    driver_memory: Text
    jars: Text
    jars_dir: Text
    conf: dict[str, Annotated[Any, AfterValidator(_scalar)]]


class LakeConfig(_Section):
    key: ClassVar[str] = "lake"
    path: Text
    run_heartbeat_s: Positive
    run_lost_after_s: Positive
    keep_runs: Count

    @model_validator(mode="after")
    def _rules(self):
        from insarlake.files import LakeFiles

        LakeFiles(self.path)                # a scheme no file system serves: one line naming it
        if not (2 * self.run_heartbeat_s <= self.run_lost_after_s < math.inf):
            raise ConfigError("config keys 'lake.run_heartbeat_s' > 0 and 'lake.run_lost_after_s' >= twice it (finite) are "
                              f"required; got {self.run_heartbeat_s} and {self.run_lost_after_s}")
        return self


class ModelsConfig(_Section):
    key: ClassVar[str] = "models"
    mlflow: _choice(MLFLOW_MODES)
    mlflow_experiment: Text
    reuse_extended: bool
    reuse_max_new_share: NonNegative
    cadence_tolerance_days: NonNegative
    refit_every_runs: Annotated[int, Field(ge=0)]


class CatalogConfig(_Section):
    key: ClassVar[str] = "catalog"
    database: Text
    kind: _choice(CATALOG_KINDS)
    server: Annotated[Text, AfterValidator(_host_port)]

    @model_validator(mode="after")
    def _rules(self):
        if problem := identifier_problem(self.database):
            raise ConfigError(f"config key 'catalog.database' {problem}; got {self.database!r}")
        return self


class SourceChange(TypedDict, total=False):
    """simulate.changes[]: a change in time of one simulated source (its id, 1..S)."""
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)
    source: Required[Count]
    start_date: Date
    rate_factor: NonNegative
    change_date: Date


def _one_change(entry: dict) -> dict:
    if "start_date" not in entry and "rate_factor" not in entry:
        raise ValueError("must give start_date and/or rate_factor with change_date")
    if ("rate_factor" in entry) != ("change_date" in entry):
        raise ValueError("must give rate_factor and change_date together")
    return entry


class SimulateConfig(_Section):
    key: ClassVar[str] = "simulate"
    seed: int
    n_pixels: Count
    center_lon: Annotated[float, AfterValidator(_within(-180, 180))]
    center_lat: Annotated[float, AfterValidator(_within(-85, 85))]
    width_km: Positive
    height_km: Positive
    tile_km: Positive
    start_date: Date
    end_date: Date
    cadence_days: Count
    cadence_change_date: Optional[Date]
    cadence_after_days: Count
    acquisition_gap_share: Annotated[float, AfterValidator(_within(0, 1, "[)"))]
    urban_patches: Annotated[int, Field(ge=0)]
    urban_radius_km: Positive
    urban_pixel_share: Annotated[float, AfterValidator(_within(0, 1, "[)"))]
    terrain_relief_m: float
    base_height_m: float
    incidence_near_deg: float
    incidence_far_deg: float
    track_angle_deg: float
    wavelength_mm: Positive
    sources: dict[_choice(SOURCE_KINDS), Annotated[int, Field(ge=0)]]
    atmosphere_sigma_mm: NonNegative
    atmosphere_scale_km: Positive
    atmosphere_waves: Count
    stratified_mm_per_km: float
    looks: Count
    unwrap_error_share: Annotated[float, AfterValidator(_within(0, 1, "[)"))]
    missing_share: Annotated[float, AfterValidator(_within(0, 1, "[)"))]
    point_velocity_mm_yr: NonNegative
    truth_min_mm: float
    nested_share: Share
    changes: list[Annotated[SourceChange, AfterValidator(_one_change)]]

    @model_validator(mode="after")
    def _rules(self):
        if dt.date.fromisoformat(self.end_date) <= dt.date.fromisoformat(self.start_date):
            raise ConfigError("config key 'simulate.end_date' must be after 'simulate.start_date'")
        return self


class IngestConfig(_Section):
    key: ClassVar[str] = "ingest"
    format: _choice(INPUT_FORMATS)
    max_missing_share: Share
    displacement_unit: _choice(DISPLACEMENT_UNITS)
    split_tracks: bool
    overlap_distance_m: Positive
    overlap_max_rms_mm: NonNegative
    append_max_difference_mm: NonNegative


class PartitionConfig(_Section):
    key: ClassVar[str] = "partition"
    min_precision: Precision
    max_precision: Precision
    max_pixels_per_tile: Count
    pixels_per_file: Count

    @model_validator(mode="after")
    def _rules(self):
        if self.min_precision > self.max_precision:
            raise ConfigError("config keys 'partition.min_precision' <= 'partition.max_precision' must lie in 1..12")
        return self


class TemporalConfig(_Section):
    key: ClassVar[str] = "temporal"
    metric: _choice(TEMPORAL_METRICS)
    gamma: Positive
    preprocessing: _choice(PREPROCESSINGS)
    k: Optional[Count]
    k_min: Annotated[int, Field(ge=2)]
    k_max: Annotated[int, Field(ge=2)]
    sample_size: Count
    silhouette_size: Count
    max_iter: Count
    max_iter_barycenter: Count
    seed: int
    reuse_model: bool
    write_distance: bool

    @model_validator(mode="after")
    def _rules(self):
        if self.k_min > self.k_max:
            raise ConfigError("config keys 'temporal.k_min' <= 'temporal.k_max' must be >= 2")
        return self


class CovariogramConfig(_Section):
    key: ClassVar[str] = "covariogram"
    pairs: Count
    local_share: Share
    local_precision: Precision
    bin_km: Positive
    max_distance_km: Positive
    fraction: Annotated[float, AfterValidator(_within(0, 1, "()"))]
    seed: int
    pixels_per_pair: Positive

    @model_validator(mode="after")
    def _rules(self):
        if not self.bin_km < self.max_distance_km:
            raise ConfigError("config keys 'covariogram.pairs' >= 1 and 0 < 'covariogram.bin_km' < "
                              "'covariogram.max_distance_km' are required")
        return self


class LabelSetting(TypedDict, total=False):
    """spatial.per_label.<label>: DBSCAN's eps (m) and/or min_samples for one TSKM label."""
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)
    eps_m: EpsM
    min_samples: Count


def _some_setting(entry: dict) -> dict:
    if not entry:
        raise ValueError("must be a mapping with eps_m and/or min_samples")
    return entry


class SpatialConfig(_Section):
    key: ClassVar[str] = "spatial"
    eps_m: Optional[EpsM]
    eps_correlation_factor: Positive
    min_samples: Count
    per_label: dict[int, Annotated[LabelSetting, AfterValidator(_some_setting)]]
    min_precision: Precision
    max_precision: Precision
    max_points_per_tile: Count
    map_max_points: Count

    @model_validator(mode="after")
    def _rules(self):
        if self.min_precision > self.max_precision:
            raise ConfigError("config keys 'spatial.min_precision' <= 'spatial.max_precision' must lie in 1..12")
        return self


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("must not name a model twice")
    return values


class ClassifyConfig(_Section):
    key: ClassVar[str] = "classify"
    models: Annotated[list[_choice(CLASSIFIER_ARCHITECTURES)], Field(min_length=1), AfterValidator(_distinct)]
    predict_with: Text
    target: _choice(CLASSIFY_TARGETS)
    noise_as_class: bool
    train_share: Annotated[float, AfterValidator(_within(0, 1, "()"))]
    split_seed: int
    class_weight_power: Share
    max_train_pixels_per_class: Optional[Count]
    max_train_pixels: Optional[Count]
    max_validation_pixels: Optional[Count]
    max_evaluation_pixels: Optional[Count]
    lstm_units: Annotated[Units, Field(min_length=1)]
    perceptron_units: Units
    dense_units: Units
    dropout: Annotated[float, AfterValidator(_within(0, 1, "[)"))]
    batch_size: Count
    learning_rate: Positive
    max_epochs: Count
    patience: Count
    seed: int
    shards: Count
    num_processes: Count
    local_mode: bool
    use_gpu: bool
    threads_per_process: Count
    threshold: Share
    inference_batch_size: Count
    network_batch_rows: Count
    retrain: bool

    @model_validator(mode="after")
    def _rules(self):
        if self.predict_with != "best" and self.predict_with not in self.models:
            raise ConfigError(f"config key 'classify.predict_with' must be 'best' or one of classify.models; "
                              f"got {self.predict_with!r}")
        if self.batch_size % self.shards:
            raise ConfigError(f"config key 'classify.batch_size' ({self.batch_size}) must be a multiple of "
                              f"'classify.shards' ({self.shards})")
        if self.shards < self.num_processes:
            raise ConfigError(f"config key 'classify.shards' ({self.shards}) must be >= 'classify.num_processes' "
                              f"({self.num_processes}): every process reads its own shards")
        return self


class HotspotsConfig(_Section):
    key: ClassVar[str] = "hotspots"
    labels: _choice(HOTSPOT_LABELS)
    method: _choice(HOTSPOT_METHODS)
    max_standard_distance_km: Optional[Positive]
    standard_distance_factor: Positive
    event_step_f: Optional[Positive]
    min_pixels: Count
    noise_velocity_mm_yr: Optional[Positive]
    stable_clip_z: Annotated[float, Field(gt=1)]
    stable_runaway_ratio: Optional[Annotated[float, Field(gt=1)]]
    z_pixel: Positive
    z_hotspot: Positive
    split_level_ratio: Optional[Annotated[float, Field(gt=1)]]
    merge_contact_ratio: Positive
    residual_radius_m: Optional[Positive]
    residual_z: Positive
    residual_share: Annotated[float, Field(ge=0)]
    residual_rim_share: Share
    step_split_f: Optional[Positive]
    step_split_share: Annotated[float, Field(ge=0)]
    step_split_radius_m: Positive
    step_split_min_samples: Count
    rate_split_step_f: Optional[Positive]
    rate_split_grow_z: Positive
    rate_split_grow_radius_m: Positive
    rate_split_epoch_tolerance: Annotated[int, Field(ge=0)]
    step_join_f: Optional[Positive]
    step_join_epoch_f: Positive
    rim_grow_z: Optional[Positive]
    rim_grow_radius_m: Positive
    eps_m: Optional[Positive]
    eps_correlation_factor: Positive
    min_samples: Count
    ellipse_n_std: Positive
    score_methods: list[_choice(HOTSPOT_METHODS)]
    min_source_pixels: Count
    min_jaccard: Annotated[float, AfterValidator(_within(0, 1, "(]"))]
    map_max_points: Count

    @model_validator(mode="after")
    def _rules(self):
        if self.rim_grow_z is not None and not self.rim_grow_z < self.z_pixel:
            raise ConfigError(f"config key 'hotspots.rim_grow_z' ({self.rim_grow_z}) must be below "
                              f"'hotspots.z_pixel' ({self.z_pixel}): a rim is the pixels moving less than a hotspot's")
        return self


class AlertsConfig(_Section):
    key: ClassVar[str] = "alerts"
    min_overlap: Annotated[float, AfterValidator(_within(0, 1, "(]"))]
    min_present_share: Share
    z_alert: Positive
    persist_epochs: Count
    baseline_years: Positive
    min_baseline_epochs: Annotated[int, Field(ge=5)]
    seasonal_min_years: Positive
    growth_ratio: Annotated[float, Field(gt=1)]
    growth_min_pixels: Count
    high_velocity_mm_yr: Positive
    high_z: Positive
    assets: Optional[Text]


class ForecastConfig(_Section):
    key: ClassVar[str] = "forecast"
    models: Annotated[list[_choice(FORECAST_NEURAL_MODELS)], AfterValidator(_distinct)]
    evaluate: bool
    input_epochs: Annotated[int, Field(ge=2)]
    horizon_epochs: Count
    train_share: Annotated[float, AfterValidator(_within(0, 1, "()"))]
    validation_share: Annotated[float, AfterValidator(_within(0, 1, "()"))]
    graph_k: Count
    graph_max_distance_m: Positive
    graph_cell_km: float
    nodes_per_subgraph: Count
    halo_hops: Annotated[int, Field(ge=0)]
    pixels_per_task: Count
    train_subgraphs: Count
    batch_parts: Count
    windows_per_part: Count
    learning_rate: Positive
    max_epochs: Count
    patience: Count
    seed: int
    num_processes: Count
    local_mode: bool
    use_gpu: bool
    threads_per_process: Count
    samples: Count
    predict_samples: Annotated[int, Field(ge=0)]
    calibrate_interval: bool
    hyper: dict[_choice(FORECAST_NEURAL_MODELS), dict[str, Any]]
    retrain: bool
    plot_pixels: Count
    moving_mm_yr: NonNegative
    monitoring_horizon_days: Optional[Positive]

    @model_validator(mode="after")
    def _rules(self):
        if "dapf" not in self.models:
            raise ConfigError(f"config key 'forecast.models' must list dapf (the product's forecaster); got {self.models!r}")
        if not self.train_share + self.validation_share < 1:
            raise ConfigError("config keys 'forecast.train_share' and 'forecast.validation_share' must have a sum "
                              f"below 1 (the rest is the test part); got {self.train_share}, {self.validation_share}")
        if not self.graph_cell_km * 1000.0 >= (self.halo_hops + 1) * self.graph_max_distance_m:
            raise ConfigError(f"config key 'forecast.graph_cell_km' must be >= (halo_hops + 1) x graph_max_distance_m "
                              f"/ 1000 = {(self.halo_hops + 1) * self.graph_max_distance_m / 1000:g} (a cell's "
                              f"subgraphs and halos are built from its neighbouring cells); got {self.graph_cell_km}")
        return self


class Config(_Section):
    dataset: Text
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
    alerts: AlertsConfig
    forecast: ForecastConfig

    @model_validator(mode="after")
    def _rules(self):
        if problem := dataset_problem(self.dataset):
            raise ConfigError(f"config key 'dataset' {problem}; got {self.dataset!r}")
        return self

    def as_dict(self) -> dict:
        return self.model_dump()

    @property
    def hash(self) -> str:
        """sha256 (first 16 hex) of the canonical JSON of the effective config."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SectionT = TypeVar("SectionT", bound=_Section)


def replace(section: SectionT, **changes: Any) -> SectionT:
    """A copy of ``section`` (the Config or one of its sections) with ``changes``, validated as a
    loaded config is: ``replace(config, temporal=replace(config.temporal, k=3))``."""
    return _validated(type(section), {**dict(section), **changes}, prefix=f"{section.key}." if section.key else "")


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
    return _validated(Config, data, prefix="")


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


# dict-valued keys whose entries are free (their entries are not in the defaults).
_FREE_FORM = {"spark.conf", "spatial.per_label", "forecast.hyper"}


def _merge(base: dict, update: Mapping, prefix: str, origin: str) -> dict:
    """Recursive merge; keys of ``update`` must exist in ``base`` (free-form dicts excepted), so
    that an unknown key names the file or --set that brought it."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            raise ConfigError(f"{origin}: unknown config key '{dotted}'")
        if isinstance(out[key], dict) and dotted not in _FREE_FORM and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, prefix=f"{dotted}.", origin=origin)
        else:
            out[key] = value
    return out


# pydantic's error types, in the words of a config error ("config key 'x' <words>, got <value>").
_TYPE_WORDS = {
    "int_type": "must be an integer", "int_from_float": "must be an integer", "int_parsing": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list",
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
}
_BOUND_WORDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
                "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _validated(model: type[SectionT], data: Any, prefix: str) -> SectionT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc.errors()[0], prefix) from None


def _dotted(loc: list) -> str:
    """('hotspots', 'score_methods', 1) -> hotspots.score_methods[1]; the int keys of
    spatial.per_label are keys, not list positions: spatial.per_label.0.eps_m."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and i and loc[i - 1] != "per_label":
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _config_error(error: Mapping[str, Any], prefix: str) -> ConfigError:
    """One pydantic error as one line naming the dotted key."""
    dotted = prefix + _dotted([part for part in error["loc"] if part != "[key]"]) or "<root>"
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return ConfigError(f"missing config key '{dotted}'")
    if kind == "extra_forbidden":
        return ConfigError(f"unknown config key '{dotted}'")
    if kind in _TYPE_WORDS:
        return ConfigError(f"config key '{dotted}' {_TYPE_WORDS[kind]}, got {value!r}")
    if kind in _BOUND_WORDS:
        name, sign = _BOUND_WORDS[kind]
        integer = "an integer " if isinstance(ctx[name], int) else ""      # the bound has the field's type
        return ConfigError(f"config key '{dotted}' must be {integer}{sign} {ctx[name]:g}; got {value!r}")
    if kind == "value_error" and "error" in ctx:
        return ConfigError(f"config key '{dotted}' {ctx['error']}; got {value!r}")
    return ConfigError(f"config key '{dotted}': {error['msg']}; got {value!r}")
