"""The model store logs the versions it saves to MLflow, tested against a local file-based
tracking store: one run per version with its parameters, metrics, tags and files."""
from __future__ import annotations

import json
from insarlake.config import replace
from pathlib import Path

from insarlake.files import LakeFiles
from insarlake.modelstore import ModelStore
from insarlake.tracking import MlflowTracker, flat_params, mlflow_wanted


def test_saved_versions_are_logged_to_mlflow(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # MLflow 3 keeps the file store behind this switch
    store = ModelStore(LakeFiles(str(tmp_path / "lake")), "forecast", "demo", "dapf", MlflowTracker("insar-test"))

    def write(folder: Path):
        (folder / "model.json").write_text(json.dumps({"v": 1}))
        (folder / "weights.pt").write_bytes(b"\x00" * 64)

    store.save("run1", write, make_latest=False)                 # not the newest yet: not logged
    store.save("run1", write, params={"hyper": {"hidden": 32, "layers": [2, 3]}, "model": "dapf"},
               metrics={"val_mse": 0.25, "best_epoch": 7, "interval_scale": float("nan"), "note": "x"})
    experiment = mlflow.get_experiment_by_name("insar-test")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "forecast/demo/dapf/run1"
    assert run.data.params == {"hyper.hidden": "32", "hyper.layers": "[2, 3]", "model": "dapf"}
    assert run.data.metrics == {"val_mse": 0.25, "best_epoch": 7.0}           # NaN and text left out
    assert run.data.tags["insarlake.uri"] == store.uri("run1") and run.data.tags["insarlake.version"] == "run1"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.json", "model/weights.pt"}


def test_the_config_decides_when_to_log(config, monkeypatch):
    from insarlake.lake import model_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert not mlflow_wanted("auto") and mlflow_wanted("always") and not mlflow_wanted("never")
    assert model_store(config, "tskm", "demo", "tskm").tracker is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///nowhere")
    assert mlflow_wanted("auto")
    tracked = model_store(config, "tskm", "demo", "tskm")
    assert tracked.tracker == MlflowTracker(config.models.mlflow_experiment)
    never = replace(config, models=replace(config.models, mlflow="never"))
    assert model_store(never, "tskm", "demo", "tskm").tracker is None


def test_long_and_nested_parameters_fit_mlflow():
    flat = flat_params({"a": {"b": {"c": 1}}, "long": "x" * 7000, "list": [1, 2]})
    assert flat == {"a.b.c": "1", "long": "x" * 6000, "list": "[1, 2]"}

