"""The jobs, one module per stage and the scheduled pipeline: each has ``main(argv)`` and
``entry()`` (the wheel's console script ``insarlake-<job>``). ``jobs/<job>.py`` in the checkout
runs the same entry point, for ``./spark-submit.sh jobs/<job>.py`` and cluster steps."""

JOBS = ("simulate", "ingest", "cluster", "classify", "hotspots", "alerts", "forecast", "sites", "pipeline")
