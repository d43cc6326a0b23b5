"""Files for GIS tools (QGIS, GeoPandas): a run's rows with a WKT geometry written as GeoParquet
by Sedona's writer (geometry as WKB, lon/lat: GeoParquet's default CRS, OGC:CRS84), one file,
under the run's outputs folder: ``<lake>/outputs/<dataset>/<run_id>/<name>.parquet/``."""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


def write_geoparquet(rows: DataFrame, uri: str) -> str:
    """``rows`` (a WKT ``geometry`` column; rows without one are kept, with a null geometry) as one
    GeoParquet file in the folder ``uri`` (replaced); returns ``uri``."""
    shaped = rows.withColumn("geometry", F.when(F.col("geometry").isNotNull(), F.expr("ST_GeomFromWKT(geometry)")))
    shaped.coalesce(1).write.mode("overwrite").format("geoparquet").save(uri)
    log.info("GeoParquet %s written", uri)
    return uri
