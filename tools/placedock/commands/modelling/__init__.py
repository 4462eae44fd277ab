"""The modelling playground: a provider topology written once (modelling/*.yaml),
applied to placement, queried, and drawn. The command is placedock modelling."""
