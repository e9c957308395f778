"""Models: outcome specs, learners, calibration, validation metrics, the model store (built by the models issue)."""
