"""insarlake: find deformation hotspots in InSAR time series and forecast them, on Spark.

Stages (one subpackage each): ``simulate`` (realistic scenes with ground truth), ``ingest``
(EGMS / wide CSV / Parquet into the spatially partitioned ``pixels`` table), ``temporal``
(soft-DTW time-series k-means and the displacement co-variogram). Shared modules: ``config``
(typed config), ``spark`` (the session), ``lake`` (tables, catalog, runs), ``tiling`` (spatial
partition key), ``geo`` and ``timeseries`` (small numerical helpers), ``cli`` (job plumbing).
"""
__version__ = "0.1.0"
