"""Models: outcome specs, learners, calibration, validation metrics, the model store (built by the models issue)."""

# The default seed of model development (folds, bootstrap, learners). Here, not in models.training, so that the
# command line can show it as a default without importing scikit-learn.
DEFAULT_SEED = 20261125
