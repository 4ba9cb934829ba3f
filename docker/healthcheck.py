#!/usr/bin/env python
"""Docker healthcheck of the sdrindex service: exit 0 healthy, 1 unhealthy (stdlib only).

It asks ``/readyz`` over a few fresh connections (each worker has its own socket, so they
reach both workers):

- every answer 200 (``ready``): healthy;
- nothing listens and the bundle has no ``current`` link yet: healthy, the first start is
  building the default bundle (minutes; ``sdrindex serve`` listens only once it is built);
- anything else is unhealthy: a worker whose load failed (``status: failed``, retried with
  backoff by the worker but never by itself fixed), a worker still ``loading`` or
  ``starting`` (seconds with an existing bundle and the image's numba cache: the
  healthcheck's ``start_period`` and ``retries`` cover it, a load that hangs does not
  pass), no answer while a bundle exists, a timeout.

So a failed load trips the check within ``start_period + retries x interval`` (20 + 3 x 10
s in docker-compose.yml) instead of hiding behind a 30-minute start period. Settings:
``SDRINDEX_HEALTHCHECK_URL`` (default ``http://127.0.0.1:8000/readyz``), ``SDRINDEX_BUNDLE``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

URL = os.environ.get("SDRINDEX_HEALTHCHECK_URL", "http://127.0.0.1:8000/readyz")
TRIES = 4


def probe(url: str, timeout: float = 2.0) -> tuple[str, str]:
    """(status, detail) of one ``/readyz``: ready, starting, loading, failed, down..."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return ("ready", "") if r.status == 200 else (f"http {r.status}", "")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        return str(body.get("status") or f"http {exc.code}"), str(body.get("detail") or "")
    except OSError as exc:  # refused, reset, timed out
        return "down", str(getattr(exc, "reason", exc))


def verdict(answers: list[tuple[str, str]], bundle: Path) -> tuple[int, str]:
    """(exit status, why) for the answers of the probes."""
    states = {status for status, _ in answers}
    if states == {"ready"}:
        return 0, "ready"
    if states == {"down"} and not (bundle / "current").is_symlink():
        return 0, f"building the first bundle at {bundle} (nothing listens yet)"
    bad = [f"{status}: {detail}" for status, detail in answers if status != "ready"]
    return 1, "; ".join(dict.fromkeys(bad))


def main() -> int:
    bundle = Path(os.environ.get("SDRINDEX_BUNDLE") or "bundles/mnist")
    with ThreadPoolExecutor(TRIES) as pool:
        answers = list(pool.map(lambda _: probe(URL), range(TRIES)))
    code, why = verdict(answers, bundle)
    print(why[:500])  # docker inspect shows the last outputs of the check
    return code


if __name__ == "__main__":
    sys.exit(main())
