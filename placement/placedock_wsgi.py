"""The WSGI module uwsgi loads: placedock's preflight checks, then placement.

Running the checks here, in the uwsgi master before it forks, rather than in a
process of their own, means placement's modules are imported once per start:
a new replica comes into rotation about a second sooner. A failed check ends
the process with its one line (see preflight.py).

When placement itself does not import (a tree under development with a syntax
error, see reloader.py), one line says where and why before uwsgi prints the
whole traceback and exits.
"""

import sys
import traceback

try:
    import preflight

    preflight.main()

    from placement.wsgi.api import application  # noqa: F401 - after the checks, on purpose
except Exception as exc:
    if isinstance(exc, SyntaxError):
        where, reason = f"{exc.filename}:{exc.lineno}", exc.msg
    else:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where, reason = f"{frame.filename}:{frame.lineno}", exc
    print(f"placedock: placement does not load: {where}: {type(exc).__name__}: {reason}", file=sys.stderr, flush=True)
    raise
