"""Join the hotspots of a dataset's viewing geometries into sites (`sites`, `site_hotspots`).

Runs insarlake.jobs.sites (its options: ./spark-submit.sh jobs/sites.py --help).
"""
from insarlake.jobs.sites import entry

entry()
