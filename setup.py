"""insarlake: InSAR deformation mining on Spark. The package lives in libs/insarlake."""
from setuptools import find_packages, setup

setup(
    name="insarlake",
    version="0.1.0",
    description="Find and forecast ground-deformation hotspots in InSAR data with Spark",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    package_data={"insarlake": ["default.yaml"]},
    python_requires=">=3.10",
    # insarlake-<job>: the jobs as console scripts (Databricks python_wheel_task entry points)
    entry_points={"console_scripts": [f"insarlake-{job}=insarlake.jobs.{job}:entry" for job in (
        "simulate", "ingest", "cluster", "classify", "hotspots", "alerts", "forecast", "sites", "pipeline")]},
    # Exact pins live in requirements.txt (installed by `make setup`); these are the direct needs.
    install_requires=[
        "pyspark>=3.5,<4.1", "delta-spark>=3.2", "apache-sedona==1.8.0", "numpy>=1.26", "pandas>=2.0",
        "pyarrow>=14", "scikit-learn", "scipy", "tslearn", "numba", "torch", "torch-geometric",
        "torchdiffeq", "pymetis", "shapely>=2", "pyyaml", "pydantic>=2.5", "matplotlib",
    ],
)
