"""Models: outcome specs, learners, calibration, validation metrics, the model store (built by the models issue)."""

# The default seed of model development (folds, bootstrap, learners). Here, not in models.training, so that the
# command line can show it as a default without importing scikit-learn.
DEFAULT_SEED = 20261125

# Above this many eligible rows of an outcome, its models are developed on a sample of procedures of this many rows
# and the published model fitted on every row (models.training.TrainingConfig.development_rows); never below the least.
DEFAULT_DEVELOPMENT_ROWS = 200_000
MIN_DEVELOPMENT_ROWS = 10_000  # smaller samples: the scaled replicates understate the spread (measured)
