"""The rolling-upgrade rehearsal (placedock upgrade): data set, traffic, orchestration."""
