"""Shared fixtures: one real Spark session (Sedona + Delta + embedded catalog) for the whole run."""
from __future__ import annotations

from pathlib import Path

import pytest

from insarlake.config import load_config

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
EGMS_ZIP = SHARED / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"
EGMS_CSV_MEMBER = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"

# A small scene for Spark tests: 8 x 8 km, 4,000 pixels, two years.
SMALL_SCENE = [
    "simulate.n_pixels=4000", "simulate.width_km=8.0", "simulate.height_km=8.0", "simulate.tile_km=2.0",
    "simulate.start_date=2020-01-05", "simulate.end_date=2021-12-31", "simulate.urban_patches=3",
    "simulate.sources={subsidence: 2, uplift: 1, landslide: 1, tunnel: 1, postseismic: 1}",
]


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def config(lake_dir):
    return load_config(overrides=[
        f"lake.path={lake_dir}", "spark.master=local[2]", "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false'}", "partition.pixels_per_file=1500",
        "partition.max_pixels_per_tile=800", *SMALL_SCENE,
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
