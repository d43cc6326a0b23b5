"""Track the hotspots across runs into `hotspot_tracks` and raise `alerts` on what changed.

Runs insarlake.jobs.alerts (its options: ./spark-submit.sh jobs/alerts.py --help).
"""
from insarlake.jobs.alerts import entry

entry()
