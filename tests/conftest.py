"""Shared fixtures: one real Spark session (Sedona + Delta + embedded catalog) for the whole run."""
from __future__ import annotations

from pathlib import Path

import pytest

from insarlake.config import load_config
from insarlake.standalone import free_port  # noqa: F401  (tests import it from here)

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
EGMS_ZIP = SHARED / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"
EGMS_CSV_MEMBER = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"

# A small scene for Spark tests: 10 x 10 km, 5,000 pixels, two years, one source of each kind.
SMALL_SCENE = [
    "simulate.n_pixels=5000", "simulate.width_km=10.0", "simulate.height_km=10.0", "simulate.tile_km=2.0",
    "simulate.start_date=2020-01-05", "simulate.end_date=2021-12-31", "simulate.urban_patches=3",
    "simulate.sources={subsidence: 1, uplift: 1, landslide: 1, tunnel: 1, postseismic: 1}",
]


def pytest_collection_modifyitems(config, items):
    """Tier markers: every test that uses the Spark session (directly or through another fixture)
    is marked ``spark`` (a module that starts Spark jobs itself marks itself)."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


def fast_clustering(config):
    """``config`` with TSKM (k fixed at 3) and co-variogram settings small enough for tests."""
    from insarlake.config import replace

    return replace(config,
                   temporal=replace(config.temporal, sample_size=60, silhouette_size=60, k=3, max_iter=2,
                                    max_iter_barycenter=2),
                   covariogram=replace(config.covariogram, pairs=50_000))


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def config(lake_dir):
    return load_config(overrides=[
        f"lake.path={lake_dir}", "spark.master=local[2]", "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false'}", "partition.pixels_per_file=500",
        "partition.min_precision=6", "partition.max_pixels_per_tile=60", *SMALL_SCENE,
    ])


@pytest.fixture(scope="session")
def spark(config):
    from insarlake.spark import get_session

    session = get_session(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def egms_csv_bytes() -> bytes:
    import zipfile

    if not EGMS_ZIP.is_file():
        pytest.fail(f"the real EGMS burst is missing: {EGMS_ZIP} (../shared must sit beside the project)")
    with zipfile.ZipFile(EGMS_ZIP) as zf:
        return zf.read(EGMS_CSV_MEMBER)


@pytest.fixture(scope="session")
def sim_scene(spark, config, tmp_path_factory):
    """The small scene simulated on Spark and ingested as dataset 'sim': (simulate, ingest) results."""
    from insarlake.ingest.stage import run_ingest
    from insarlake.lake import Run, raw_path
    from insarlake.simulate.stage import run_simulate

    simulated = run_simulate(spark, config, "sim", raw_path(config, "sim"), Run("simulate", config))
    ingested = run_ingest(spark, config, raw_path(config, "sim"), "sim", Run("ingest", config))
    return simulated, ingested


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server on localhost (moto's server mode), for the whole session; its
    settings as Spark's S3A keys (what a profile's spark.conf holds)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {"spark.hadoop.fs.s3a.endpoint": f"http://127.0.0.1:{port}",
           "spark.hadoop.fs.s3a.access.key": "testing", "spark.hadoop.fs.s3a.secret.key": "testing",
           "spark.hadoop.fs.s3a.path.style.access": "true", "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
           "spark.hadoop.fs.s3a.endpoint.region": "us-east-1", "spark.hadoop.fs.s3a.attempts.maximum": "1"}
    server.stop()


def new_bucket(settings: dict) -> str:
    """A new, empty bucket on the S3 server of ``settings`` (s3_server)."""
    import uuid

    import boto3

    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=settings["spark.hadoop.fs.s3a.endpoint"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=name)
    return name


def sql_in_new_process(profile: str, tables: tuple[str, ...], queries: list[str], cwd: Path) -> list[int]:
    """The first value (an integer) of each SQL query in ``queries``, answered by a new Python
    process on the lake of the config file ``profile`` with ``tables`` registered in its catalog
    (what an analyst's session does); AssertionError with its stderr when the process fails."""
    import os
    import subprocess
    import sys

    script = (
        "from insarlake.config import load_config\n"
        "from insarlake.lake import register_table\n"
        "from insarlake.spark import get_session\n"
        f"config = load_config({profile!r})\n"
        "spark = get_session(config)\n"
        f"for t in {tuple(tables)!r}:\n"
        "    register_table(spark, config, t)\n"
        f"print(*(spark.sql(q).first()[0] for q in {list(queries)!r}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "AWS_"))}
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, text=True, capture_output=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [int(v) for v in out.stdout.split()[-len(queries):]]


def delta_table_schema(path: Path):
    """(schema, partition columns) of the Delta table at ``path``, read from its log (the last
    metaData action), without Spark."""
    import json

    from pyspark.sql import types as T

    meta = None
    for log_file in sorted((path / "_delta_log").glob("*.json")):
        for line in log_file.read_text().splitlines():
            action = json.loads(line)
            meta = action.get("metaData", meta)
    assert meta is not None, f"{path}: no Delta metadata"
    return T.StructType.fromJson(json.loads(meta["schemaString"])), tuple(meta["partitionColumns"])


def write_hotspots(spark, dataset: str, run, hotspots: dict[int, dict], members: dict[int, list[str]]) -> None:
    """Hand-made rows of `hotspots` and `hotspot_pixels` of ``dataset`` by ``run``, as the hotspots
    stage writes them: {hotspot_id: {column: value}} (other columns null), {hotspot_id: pixel ids}."""
    from insarlake.hotspots.stage import HOTSPOTS_SCHEMA, PIXELS_SCHEMA
    from insarlake.lake import write_table

    rows = [{**values, "dataset": dataset, "run_id": run.run_id, "method": "significant", "hotspot_id": h}
            for h, values in hotspots.items()]
    write_table(spark, spark.createDataFrame([tuple(r.get(f.name) for f in HOTSPOTS_SCHEMA.fields) for r in rows],
                                             HOTSPOTS_SCHEMA), run.config, "hotspots", [dataset], run=run)
    write_table(spark, spark.createDataFrame([(dataset, run.run_id, h, p, False) for h, ids in members.items()
                                              for p in ids],
                                             PIXELS_SCHEMA), run.config, "hotspot_pixels", [dataset], run=run)


def readme_block(name: str, language: str = "sql") -> str:
    """The code block (``language``) of the README marked <!-- tested: name ... --> (the cookbook's
    queries and snippets are run by the tests that name them)."""
    import re

    return re.search(rf"<!-- tested: {name} [^>]*-->\n```{language}\n(.*?)```", (PROJECT / "README.md").read_text(),
                     re.S).group(1)
