"""The pieces of placedock bench (the benchmark behind `tox -e bench`).

- cli:            the phases of one run, in order, and `--report-from` (the report again from saved results).
- raw:            the reference: upstream placement under uwsgi on the host, no container.
- cpu:            where the CPU went during a measurement (client, containers, docker-proxy, others).
- report:         docs/benchmark.md: report.md.tmpl's prose filled from the results.
- report.md.tmpl: every sentence of docs/benchmark.md, no figure.
- tables:         the report's numbers and tables, derived from the results.
- plot:           docs/benchmark.png (matplotlib, imported only to draw it).

The load itself is placedock.traffic's (perfload, the timed mixes), the stack
placedock.stack's. Every load loop is bounded both in time and in request
count, and every address it sends to is 127.0.0.1 or one of the benchmark's
own containers.
"""
