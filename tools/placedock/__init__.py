"""placedock's tooling: one package, one command (`placedock COMMAND`, cli.py).

Read it in layers, bottom up. stack/ talks to a stack: compose.py brings the
test project up and down, waits for haproxy, reads Docker (every test imports
it); swarm.py, testswarm.py and kube.py do the same for a swarm, test hosts
made here, and kubernetes/ offline. api/client.py talks to placement: one
HTTP client whose retries never send a write twice. traffic/ is load through
a front door: ledger.py counts every answer (acknowledged, refused, in doubt)
and checks the database agrees; perfload.py is the benchmark's data set;
mixes.py the timed read and write mixes. commands/ holds what a user runs on
top of those: bench (the measured report), modelling (provider models in
modelling/*.yaml), upgrade (the rolling-upgrade rehearsal).
"""
