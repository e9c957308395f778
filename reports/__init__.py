"""Reports: QI statistics, plots, HTML report and registry submission (built by the reports issue)."""
