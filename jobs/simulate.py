"""Simulate an InSAR scene with ground truth (EGMS L2b CSV and the `truth` table).

Runs insarlake.jobs.simulate (its options: ./spark-submit.sh jobs/simulate.py --help).
"""
from insarlake.jobs.simulate import entry

entry()
