"""The gateway keeps an idle client connection open longer than clients and load balancers do, so it
is never the side that closes a connection a client is about to reuse (uvicorn's default is 5 s)."""

import http.client
import time

from devtools.stack import Stack


def test_a_connection_idle_for_longer_than_uvicorn_s_default_is_still_served(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["api"], timeout=10)
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() == b'{"status":"ok"}'
    time.sleep(6)  # Idle past uvicorn's default keep-alive (5 s): the point of the test.

    connection.request("GET", "/healthz")  # On the same socket: a closed one raises here.

    assert connection.getresponse().status == 200
    connection.close()
