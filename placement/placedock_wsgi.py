"""The WSGI module uwsgi loads: placedock's preflight checks, then placement.

Running the checks here, in the uwsgi master before it forks, rather than in a
process of their own, means placement's modules are imported once per start:
a new replica comes into rotation about a second sooner. A failed check ends
the process with its one line (see preflight.py).
"""

import preflight

preflight.main()

from placement.wsgi.api import application  # noqa: E402,F401 - after the checks, on purpose
