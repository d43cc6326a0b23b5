"""Cluster a dataset in time (TSKM) and space (DBSCAN) into `clusters` and `covariogram`.

Runs insarlake.jobs.cluster (its options: ./spark-submit.sh jobs/cluster.py --help).
"""
from insarlake.jobs.cluster import entry

entry()
