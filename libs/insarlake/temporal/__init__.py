"""Temporal clustering of deformation time series: exact, fast soft-DTW assignment to centroids.

``softdtw_assign`` labels series with their soft-DTW-nearest centroid (as tslearn's
``TimeSeriesKMeans(metric="softdtw").predict``), ``softdtw_distances`` gives the full soft-DTW matrix
(as ``tslearn.metrics.cdist_soft_dtw``), and ``fill_missing`` is the NaN rule applied at fit and assignment.
"""
from insarlake.temporal.softdtw import softdtw_assign, fill_missing, softdtw_distances

__all__ = ["softdtw_assign", "fill_missing", "softdtw_distances"]
