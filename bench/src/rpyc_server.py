"""RPyC side of the benchmark: a classic service exposing add(a, b) on a free loopback port.

Prints `listening on 127.0.0.1:PORT`, then serves until killed. The registry is off: nothing is
announced beyond this machine.
"""

import rpyc
from rpyc.utils.server import ThreadedServer


class BenchService(rpyc.Service):
    def exposed_add(self, a, b):
        return a + b


def main():
    server = ThreadedServer(
        BenchService, hostname="127.0.0.1", port=0, auto_register=False
    )
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.start()


main()
