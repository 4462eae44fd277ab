"""The pieces of placedock bench (the benchmark behind `tox -e bench`).

- load:    HTTP load against one placement URL: the perfload provider loader,
           allocation-candidate timings, and the fixed-duration read and write mixes.
- docker:  the benchmark's own compose project (placedock-bench), haproxy's stats,
           container addresses, uwsgi worker memory, image sizes.
- raw:     the reference: upstream placement under uwsgi on the host, no container.
- cpu:     where the CPU went during a measurement (client, containers, docker-proxy, others).
- report:  docs/benchmark.md and docs/benchmark.png from the results.

Every load loop here is bounded both in time and in request count, and every
address it sends to is 127.0.0.1 or one of the benchmark's own containers.
"""
