"""Simulate stage: realistic InSAR scenes with ground truth, in the EGMS L2b layout.

``scene`` is the pure numpy generator (tile by tile); ``stage`` runs it on Spark.
"""
