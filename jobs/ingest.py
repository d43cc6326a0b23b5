"""Ingest InSAR time series into `pixels` and `epochs`, bad rows to `quarantine`.

Runs insarlake.jobs.ingest (its options: ./spark-submit.sh jobs/ingest.py --help).
"""
from insarlake.jobs.ingest import entry

entry()
