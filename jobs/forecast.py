"""Forecast every pixel's next epochs with DAPF into `forecasts`.

Runs insarlake.jobs.forecast (its options: ./spark-submit.sh jobs/forecast.py --help).
"""
from insarlake.jobs.forecast import entry

entry()
