"""Modelling scenarios: a provider topology written once (modelling/*.yaml),
loaded into placement, queried, and drawn. The command is placedock modelling."""
