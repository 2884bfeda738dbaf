"""The socket layer alone: an echo server over one ROUTER socket, zmq-anyio against trikernel's.

    python benchmarks/transport.py [--rounds N] [--messages N]

Each server runs in a process of its own (a trio loop, one task), and a plain blocking pyzmq
DEALER client in this process measures:

- round trip: send one small message, wait for its echo; median and p99 in microseconds;
- pipelined: send N messages back to back, then read the N echoes; messages per second.

The servers take turns, round after round, so the machine's drift hits both. This is the
measurement behind ``trikernel/channels/transport.py`` leaving zmq-anyio (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import zmq

SERVERS = ("zmq-anyio", "trikernel")


def serve(kind: str) -> None:
    """Echo every message on a ROUTER socket; print the port once bound."""
    import trio

    async def main() -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw = ctx.socket(zmq.ROUTER)
        port = raw.bind_to_random_port("tcp://127.0.0.1")
        print(port, flush=True)
        if kind == "zmq-anyio":
            import zmq_anyio

            async with zmq_anyio.Socket(raw) as sock:
                while True:
                    received = sock.arecv_multipart()
                    await received.wait()
                    await sock.asend_multipart(received.return_value).wait()
        else:
            from trikernel.channels.transport import FrameSocket

            frames = FrameSocket(raw, port)
            while True:
                await frames.send(await frames.recv())

    trio.run(main)


def measure(kind: str, messages: int) -> tuple[list[float], float]:
    """Start ``kind``'s server; return round-trip times (µs) and pipelined messages/s."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
    )
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    try:
        assert server.stdout is not None
        client.connect(f"tcp://127.0.0.1:{int(server.stdout.readline())}")
        payload = [b"header", b"x" * 200]
        for _ in range(200):  # warm up: the connection, and both sides' code paths
            client.send_multipart(payload)
            client.recv_multipart()
        trips = []
        for _ in range(messages):
            start = time.perf_counter()
            client.send_multipart(payload)
            client.recv_multipart()
            trips.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        for _ in range(messages):
            client.send_multipart(payload)
        for _ in range(messages):
            client.recv_multipart()
        rate = messages / (time.perf_counter() - start)
        return trips, rate
    finally:
        client.close()
        ctx.term()
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    trips: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    rates: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    for n in range(args.rounds):
        for kind in SERVERS[n % 2 :] + SERVERS[: n % 2]:
            round_trips, rate = measure(kind, args.messages)
            trips[kind].extend(round_trips)
            rates[kind].append(rate)
    print(f"{'server':<10} {'round trip µs':>14} {'p99 µs':>8} {'pipelined msg/s':>16}")
    for kind in SERVERS:
        p99 = statistics.quantiles(trips[kind], n=100)[98]
        print(
            f"{kind:<10} {statistics.median(trips[kind]):>14.1f} {p99:>8.1f} "
            f"{statistics.median(rates[kind]):>16,.0f}"
        )
    base, ours = SERVERS
    print(
        f"ratio      {statistics.median(trips[ours]) / statistics.median(trips[base]):>14.2f}x"
        f" {'':>8} {statistics.median(rates[ours]) / statistics.median(rates[base]):>15.2f}x"
    )


if __name__ == "__main__":
    main()
