"""The scheduled job: every stage in order on one dataset.

Runs insarlake.jobs.pipeline (its options: ./spark-submit.sh jobs/pipeline.py --help).
"""
from insarlake.jobs.pipeline import entry

entry()
