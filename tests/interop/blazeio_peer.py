"""
A real Blazeio BMP peer for interop tests with muxframe.

This script is run by a Python that has the C{blazeio} package installed (see
tests/interop/README.md), never imported by the test suite itself.  It uses
only Blazeio's own multiplexer (C{Blazeio.Protocols.multiplexer}): the BMP
server protocol C{BlazeioServerProtocol} with an echo handler, and the BMP
client protocol C{BlazeioClientProtocol} through C{io.Session(...,
client_protocol=Protocols.client, connect_only=1)} and C{create_stream()},
as Blazeio's own proxy (C{Blazeio/Other/proxy.py}) does.

  server [--host H] [--port P]
      Listen; print "LISTENING <port>" on stdout; echo every stream (each
      chunk read is written back; when the peer's EOF arrives the handler
      returns and Blazeio sends EOF, then close).  Prints one line
      "STREAM <id> <bytes>" per finished stream.

  client --port P [--sizes 1,10240,...] [--seed N]
      Open one stream per size on one connection, concurrently; on each,
      write the payload, then EOF, while reading the echo until EOF; compare.
      Prints "RESULT <id> <sent> <received> OK|MISMATCH" per stream and
      "ALL OK" or "FAILED"; exit status 0 only when every stream matched.
      Streams the server opens are logged as "PEER-OPENED <id>" (Blazeio's
      client enters them and never reads them).  --linger S keeps the
      connection S seconds after the streams are done.

Payloads are C{payload(seed, index, size)} below, so the other side can
check them without any side channel.
"""

import argparse
import asyncio
import hashlib
import os
import sys


def payload(seed, index, size):
    """
    Deterministic test bytes: SHA-256 in counter mode over (seed, index).
    """
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d:%d" % (seed, index, counter)).digest()
        counter += 1
    return bytes(out[:size])


def log(*parts):
    # One write(2) per line: Blazeio's own logger writes to stdout too, and
    # print() would let it cut our line in two.
    sys.stdout.flush()
    os.write(1, (" ".join(str(p) for p in parts) + "\n").encode())


def runServer(args):
    import Blazeio as io
    from Blazeio.Protocols.multiplexer import BlazeioServerProtocol

    async def echo(r):
        # r is a Blazeio_Stream_Server: its request() is the stream's pull.
        total = 0
        async for chunk in r.request():
            total += len(chunk)
            await r.writer(bytes(chunk))
        log("STREAM", r.id.decode(), total)

    async def main():
        loop = io.loop
        server = await loop.create_server(
            lambda: BlazeioServerProtocol(echo, loop, 1024 * 1024),
            args.host, args.port)
        port = server.sockets[0].getsockname()[1]
        log("LISTENING", port)
        async with server:
            await server.serve_forever()

    io.loop.run_until_complete(main())


def runClient(args):
    import Blazeio as io
    from Blazeio.Protocols.multiplexer import Protocols

    sizes = [int(s) for s in args.sizes.split(",") if s]

    # Log the streams the server opens: Blazeio's client enters them
    # (create_stream with the peer's id) and then never reads them.
    clientProtocol = Protocols.client
    originalCreate = clientProtocol.create_stream

    async def create_stream(self, _id=None):
        if _id is not None:
            log("PEER-OPENED", _id.decode(errors="replace"))
        return await originalCreate(self, _id)

    clientProtocol.create_stream = create_stream

    async def oneStream(conn, index, size):
        data = payload(args.seed, index, size)
        stream = await conn.create_stream()
        received = bytearray()

        async def reader():
            async for chunk in stream.__pull__():
                received.extend(chunk)

        readTask = asyncio.ensure_future(reader())
        await stream.writer(data)
        await stream.__eof__()
        await readTask
        ok = bytes(received) == data
        log("RESULT", stream.id.decode(), len(data), len(received),
            "OK" if ok else "MISMATCH")
        return ok

    async def main():
        conn = await io.Session(args.host, port=args.port,
                                client_protocol=Protocols.client,
                                connect_only=1)
        results = await asyncio.wait_for(
            asyncio.gather(*[oneStream(conn, i, size)
                             for i, size in enumerate(sizes)]),
            args.timeout)
        if args.linger:
            await asyncio.sleep(args.linger)
        return all(results)

    try:
        ok = io.loop.run_until_complete(main())
    except asyncio.TimeoutError:
        log("TIMEOUT")
        ok = False
    log("ALL OK" if ok else "FAILED")
    sys.stdout.flush()
    # Blazeio leaves tasks running; leave at once with the right status.
    os._exit(0 if ok else 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sizes", default="1,10,10240,10241,100000,1048576")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--linger", type=float, default=0.0,
                        help="client: stay connected this long after the streams")
    args = parser.parse_args(argv)
    if args.mode == "server":
        runServer(args)
    else:
        runClient(args)


if __name__ == "__main__":
    main()
