"""Modelling scenarios: a provider topology written once (scenarios/*.yaml),
loaded into placement, queried, and drawn. The command is tools/scenario.py."""
