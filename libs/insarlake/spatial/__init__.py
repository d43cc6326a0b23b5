"""Spatial clustering: exact distributed DBSCAN in great-circle metres (``dbscan``) and its pure
per-tile kernel (``kernel.local_dbscan``); the cluster stage (``insarlake.cluster``) runs it inside
each TSKM cluster."""
from insarlake.spatial.dbscan import DbscanStats, dbscan, dbscan_with_stats

__all__ = ["dbscan", "dbscan_with_stats", "DbscanStats"]
