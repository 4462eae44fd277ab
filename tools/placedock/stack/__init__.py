"""Talking to a stack: a compose project (compose.py), a swarm, test hosts, kubernetes/ offline."""
