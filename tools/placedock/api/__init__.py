"""Talking to placement: its HTTP API (client.py)."""
