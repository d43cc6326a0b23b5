"""Cluster classifiers (seed paper section 3.2): LSTM and LSTM+Perceptron trained on the DBSCAN
clusters with TorchDistributor, applied to every pixel in Spark. ``model`` (torch networks,
normalisation, model files), ``train`` (the DDP training function), ``stage`` (Spark).

Importing this package does not import torch."""

from insarlake.config import CLASSIFIER_ARCHITECTURES as ARCHITECTURES     # the seed's Table 1

__all__ = ["ARCHITECTURES"]
