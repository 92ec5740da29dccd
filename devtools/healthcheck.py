"""`python -m devtools.healthcheck URL`: exit 0 when URL answers 2xx within 3 s, else 1.

The container healthcheck of every Pulse service (the image has no curl): the gateway's /readyz, a
worker's or the scheduler's /metrics, the sandbox's /healthz.
"""

import sys
import urllib.request


def main() -> int:
    (url,) = sys.argv[1:]
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (a URL we are given)
            return 0 if 200 <= response.status < 300 else 1
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
