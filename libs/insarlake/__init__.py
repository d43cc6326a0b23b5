"""insarlake: find deformation hotspots in InSAR time series and forecast them, on Spark.

Stages (one subpackage each): ``simulate`` (realistic scenes with ground truth), ``ingest``
(EGMS / wide CSV / Parquet into the spatially partitioned ``pixels`` table). Shared modules:
``config`` (typed config), ``spark`` (the session), ``lake`` (tables, catalog, runs).
"""
__version__ = "0.1.0"
