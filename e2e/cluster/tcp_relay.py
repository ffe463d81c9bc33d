"""Relay TCP connections from one address to another (both given on the command line).

The local API server listens on loopback only; pods reach it through the `kubernetes`
Service, whose endpoint is this relay on the pod bridge's host address (monitoring.sh):
in-cluster clients (Prometheus' service discovery) then work as in any cluster.

    python3 tcp_relay.py <listen-host> <listen-port> <target-host> <target-port>
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(listen: str, port: int, target: str, target_port: int) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.wait_for(asyncio.open_connection(target, target_port), 5)
        except (OSError, TimeoutError):
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(handle, listen, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
