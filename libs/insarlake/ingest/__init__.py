"""Ingest stage: EGMS L2b CSV/ZIP, wide CSV and Parquet → `pixels`, `epochs`, `quarantine`.

``parse`` holds the pure file parsing and row validation; ``stage`` runs it on Spark.
"""
