"""What changed since the previous run: hotspot tracks across runs and alerts (stage.py), from the
pure kernels tracks.py and change.py and the asset layer of assets.py."""
