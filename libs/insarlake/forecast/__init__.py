"""Deformation forecasting (seed 000, DAPF): from each pixel's coordinates and its past displacements,
predict the next epochs, with DAPF and the baselines it is compared with."""

from insarlake.config import FORECAST_NEURAL_MODELS as NEURAL_MODELS

# Every model the forecast stage knows; the first is the product's forecaster.
CLASSICAL_MODELS = ("historical_average", "persistence", "linear_trend")      # on the input window
RECORD_MODELS = ("harmonic_trend",)                                           # on the whole record before it
MODELS = NEURAL_MODELS + CLASSICAL_MODELS + RECORD_MODELS
