"""Find and describe the deformation hotspots into `hotspots` and `hotspot_pixels`.

Runs insarlake.jobs.hotspots (its options: ./spark-submit.sh jobs/hotspots.py --help).
"""
from insarlake.jobs.hotspots import entry

entry()
