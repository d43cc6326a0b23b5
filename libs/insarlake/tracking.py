"""Logging the models the model store saves to MLflow (Databricks users track models there).

Each saved version becomes one MLflow run, named ``<kind>/<dataset>/<name>/<version>``, in the
configured experiment, with the model's parameters, its metrics, tags naming the version and its
URI in the lake, and the version's files as artifacts under ``model/``. The tracking server is the
environment's (``MLFLOW_TRACKING_URI``; on Databricks the workspace's), never the config's.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# MLflow keeps a parameter value of at most this many characters (6,000 since MLflow 2.3)
_MAX_PARAM_CHARS = 6000


def mlflow_wanted(setting: str) -> bool:
    """models.mlflow: always, never, or auto (when MLFLOW_TRACKING_URI is set or on Databricks)."""
    if setting == "auto":
        return bool(os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    return setting == "always"


def flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested parameters as MLflow params: dotted keys, values as text (JSON for lists), each cut
    to MLflow's limit."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_MAX_PARAM_CHARS]
    return out


@dataclass(frozen=True)
class MlflowTracker:
    """Logs saved model versions to the MLflow ``experiment``."""
    experiment: str

    def log(self, kind: str, dataset: str, name: str, version: str, uri: str, folder: Path,
            params: dict, metrics: dict) -> str:
        """Log one saved version (its files in the local ``folder``); the MLflow run id."""
        import mlflow

        mlflow.set_experiment(self.experiment)
        finite = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        with mlflow.start_run(run_name=f"{kind}/{dataset}/{name}/{version}") as run:
            mlflow.set_tags({"insarlake.kind": kind, "insarlake.dataset": dataset, "insarlake.model": name,
                             "insarlake.version": version, "insarlake.uri": uri})
            if params:
                mlflow.log_params(flat_params(params))
            if finite:
                mlflow.log_metrics(finite)
            mlflow.log_artifacts(str(folder), artifact_path="model")
            log.info("logged %s model %s version %s to MLflow run %s (experiment %s)", kind, name, version,
                     run.info.run_id, self.experiment)
            return run.info.run_id
