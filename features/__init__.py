"""Features: records -> model matrices (built by the models issue)."""
