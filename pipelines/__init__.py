"""Pipelines: the Prefect flows and the command line; thin wiring of records/, features/, models/, reports/."""
