"""Spatial clustering: exact distributed DBSCAN in great-circle metres (``dbscan``), its pure
per-tile kernel (``kernel.local_dbscan``) and the stage that runs it inside each TSKM cluster."""
from insarlake.spatial.dbscan import DbscanStats, dbscan, dbscan_with_stats

__all__ = ["dbscan", "dbscan_with_stats", "DbscanStats"]
