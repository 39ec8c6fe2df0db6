"""``paratick node``: one node of a world whose regions are spread over processes and machines."""

from __future__ import annotations

import argparse
import sys

HELP = "run one node: join a world on a NATS bus and tick the regions its driver assigns"
DESCRIPTION = """\
Run one node of a world whose regions live on several processes or machines.  The node connects
to the NATS bus, announces itself to the world's driver (`paratick run --backend nodes`), ticks the
block of regions the driver assigns with the same shard worker every backend runs, and exchanges
borders with the nodes owning neighbouring regions over NATS subjects (one message per pair of
neighbouring regions per tick).  It leaves when the driver stops the world, or when the driver has
been silent for 5 s.

Example, two machines and a NATS server at 10.0.0.5:
  on each node machine:  paratick node --bus nats://10.0.0.5:4222 --world arena
  on the driver:         paratick run --backend nodes --workers 2 --local-nodes 0 \\
                             --bus nats://10.0.0.5:4222 --world arena --check

Exit status: 0 when the world stopped, 1 when the bus is unreachable or no driver took the node,
2 for a bad option."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.runtime.backends.nodes import DEFAULT_WORLD
    from server.runtime.nodes import JOIN_WAIT

    g = parser.add_argument_group("bus")
    g.add_argument("--bus", default="nats://127.0.0.1:4222", metavar="URL",
                   help="the NATS server, nats://HOST:PORT (default nats://127.0.0.1:4222)")
    g.add_argument("--world", default=DEFAULT_WORLD, metavar="NAME",
                   help=f"the world to join: its name on the bus (default {DEFAULT_WORLD})")
    g.add_argument("--id", default=None, metavar="ID",
                   help="this node's id on the bus (default: host, pid and random digits)")
    g.add_argument("--wait", type=float, default=JOIN_WAIT, metavar="SECONDS",
                   help=f"seconds to wait for a driver to take this node (default {JOIN_WAIT:g})")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _line(text: str) -> None:
    """``text`` and its newline on stderr in one write: the local nodes of a world share the
    driver's stderr, and a write under PIPE_BUF bytes is never interleaved with another."""
    sys.stderr.write(f"paratick node: {text}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from server.host import tune
    from server.runtime.errors import MessageError, RuntimeFault
    from server.runtime.nodes import serve_node

    def say(line: str) -> None:
        if not args.quiet:
            _line(line)

    if not args.wait > 0:
        _line("error: --wait must be > 0")
        return 2
    tune()
    try:
        serve_node(args.bus, args.world, node_id=args.id, wait=args.wait, say=say)
    except MessageError as exc:  # a bad world name or node id
        _line(f"error: {exc}")
        return 2
    except RuntimeFault as exc:
        _line(f"error: {str(exc).splitlines()[0]}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
