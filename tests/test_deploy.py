"""The shipped job: the wheel holds every job module and names them as console scripts; the
Databricks bundle and the EMR definitions name entry points and files that exist, and their
parameters parse into a valid config."""
from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT
from insarlake.jobs import JOBS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(PROJECT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("insarlake-*.whl")
    return path


def _console_scripts(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(name).decode())
    return dict(parser["console_scripts"])


def _parse_job_args(module: str, args: list[str]):
    """The job's own parser on ``args``, then the config they select (validated, no Spark)."""
    import importlib

    from insarlake.cli import config_from_args

    parsed = importlib.import_module(module).build_parser().parse_args(args)
    return parsed, config_from_args(parsed)


def test_the_wheel_holds_every_job_as_a_console_script(wheel):
    scripts = _console_scripts(wheel)
    assert scripts == {f"insarlake-{job}": f"insarlake.jobs.{job}:entry" for job in JOBS}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {f"insarlake/jobs/{job}.py" for job in JOBS} <= names
    assert {"insarlake/default.yaml", "insarlake/files.py", "insarlake/modelstore.py"} <= names
    for job in JOBS:                                   # the checkout's launchers run the same entry point
        assert f"from insarlake.jobs.{job} import entry" in (PROJECT / "jobs" / f"{job}.py").read_text()


def _fill(text: str, values: dict[str, str]) -> str:
    out = re.sub(r"\$\{([\w.]+)\}", lambda m: values[m.group(1)], text)
    assert "${" not in out
    return out


def test_the_databricks_bundle_names_the_wheel_entry_point_and_its_parameters_parse(wheel):
    bundle = yaml.safe_load((PROJECT / "databricks.yml").read_text())
    scripts = _console_scripts(wheel)
    values = {f"var.{k}": str(v.get("default", "")) for k, v in bundle["variables"].items()}
    values.update({"var.input": "s3://bucket/egms/", "workspace.file_path": str(PROJECT)})
    tasks = [t for job in bundle["resources"]["jobs"].values() for t in job["tasks"]]
    assert tasks and all("python_wheel_task" in t for t in tasks)
    for task in tasks:
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == "insarlake"
        target = scripts[wheel_task["entry_point"]]
        params = [_fill(p, values) for p in wheel_task["parameters"]]
        args, config = _parse_job_args(target.split(":")[0], params)
        assert args.dataset == "demo" and args.input == "s3://bucket/egms/"
        assert config.lake.path == "dbfs:/insarlake/lake" and config.spark.jars == "provided"
        assert config.catalog.kind == "session"
        assert any(lib.get("whl", "").startswith("./dist/insarlake-") for lib in task["libraries"])
        coordinates = {lib["maven"]["coordinates"] for lib in task["libraries"] if "maven" in lib}
        jars = yaml.safe_load((PROJECT / "conf" / "jars.yaml").read_text())["spark"]["3.5"]
        assert coordinates == {c for c in jars if not c.startswith("io.delta")}   # Delta is in the runtime
    cluster = bundle["resources"]["jobs"]["insarlake_monitoring"]["job_clusters"][0]["new_cluster"]
    assert "-ml-" in cluster["spark_version"] and "scala2.12" in cluster["spark_version"]
    assert bundle["artifacts"]["insarlake_wheel"]["type"] == "whl"


EMR_VALUES = {"DATASET": "lombardy", "INPUT": "s3://bucket/egms/", "LAKE": "s3://bucket/lake",
              "CODE": "s3://bucket/code", "APPLICATION_ID": "00abc", "EXECUTION_ROLE_ARN": "arn:aws:iam::1:role/r"}


def _emr_job_args(args: list[str], script_suffix: str) -> tuple[str, list[str]]:
    script = next(a for a in args if a.endswith(script_suffix))
    return script, args[args.index(script) + 1:]


@pytest.mark.parametrize("name", ["pipeline-step.json", "serverless-job.json"])
def test_the_emr_definitions_name_existing_files_and_their_arguments_parse(name, tmp_path, monkeypatch):
    spec = json.loads(_fill((PROJECT / "deploy" / "emr" / name).read_text(), EMR_VALUES))
    if name == "pipeline-step.json":
        (step,) = spec
        script, job_args = _emr_job_args(step["Args"], "/jobs/pipeline.py")
        shipped = " ".join(step["Args"])
    else:
        submit = spec["jobDriver"]["sparkSubmit"]
        script, job_args = submit["entryPoint"], submit["entryPointArguments"]
        shipped = submit["sparkSubmitParameters"]
    code = EMR_VALUES["CODE"]
    assert script == f"{code}/jobs/pipeline.py" and (PROJECT / "jobs" / "pipeline.py").is_file()
    assert f"{code}/insarlake-env.tar.gz#environment" in shipped and "./environment/bin/python" in shipped
    assert f"{code}/conf/emr.yaml" in shipped and (PROJECT / "conf" / "emr.yaml").is_file()
    monkeypatch.chdir(tmp_path)                         # --files puts emr.yaml beside the driver
    (tmp_path / "emr.yaml").write_text((PROJECT / "conf" / "emr.yaml").read_text())
    args, config = _parse_job_args("insarlake.jobs.pipeline", job_args)
    assert args.dataset == "lombardy" and args.input == "s3://bucket/egms/"
    assert config.lake.path == "s3://bucket/lake" and config.spark.jars == "provided"
    packages = re.search(r"spark\.jars\.packages=([^\s\"]+)", shipped).group(1).split(",")
    jars = yaml.safe_load((PROJECT / "conf" / "jars.yaml").read_text())["spark"]["3.5"]
    assert set(packages) == {c for c in jars if "delta-storage" not in c}   # a dependency of delta-spark
