"""The cluster stage: TSKM in time (``insarlake.temporal``: soft-DTW kernels, the TSKM fit, the
co-variogram), then exact distributed DBSCAN in space inside each TSKM cluster
(``insarlake.spatial``). ``stage.run_cluster`` writes `clusters` and `covariogram`; ``space`` holds
the per-label DBSCAN parameters and the cluster map."""
