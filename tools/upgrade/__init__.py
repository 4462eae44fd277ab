"""The rolling-upgrade rehearsal (tools/upgrade.py): data set, traffic, orchestration."""
