"""placedock autoscale: kubernetes/'s HorizontalPodAutoscaler applied to a compose stack or a swarm.

- hpa:      the spec from the HPA object, and the controller's algorithm (no clock, no Docker).
- observe:  the replicas, their CPU from their cgroups (v1 and v2), the front door's requests, scaling.
- timeline: the live view, the CSV and the PNG.
- cli:      the loop.
"""
