"""Hotspots: per-cluster geometry (standard distance, standard-deviation ellipse), series summary, retention,
scoring against truth."""
