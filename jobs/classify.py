"""Train (or reuse) the cluster classifiers and label every pixel into `classes`.

Runs insarlake.jobs.classify (its options: ./spark-submit.sh jobs/classify.py --help).
"""
from insarlake.jobs.classify import entry

entry()
