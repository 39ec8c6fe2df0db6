"""Who owns which region, and which nodes are alive: two JetStream key-value buckets per world.

Theory of operation
-------------------
``paratick_<world>_owners`` maps ``r<region>`` to the id of the node that owns it.  Every write is
a compare-and-set on the entry's revision (``create`` when the region has no owner yet,
``update(last=revision)`` to hand it over), so two drivers that race for a world cannot both win a
region: the loser gets :class:`OwnershipConflict`.  The driver writes the whole table before it
lets any node start, and the world starts only when every region has an owner; after losing a
node it hands that node's regions to their new owners the same way.

``paratick_<world>_nodes`` has one entry per live node, ``<node id>`` -> host and pid, with a
short time to live (:data:`PRESENCE_TTL`): each node refreshes its entry every
:data:`PRESENCE_EVERY` seconds, so a node that dies or loses the bus disappears within
``PRESENCE_TTL`` seconds wherever it runs.  (A node on the driver's machine is seen dying sooner,
from the process table.)

Everything here runs on a :class:`~server.runtime.bus.Link`'s event loop; the functions block.
A bus without JetStream raises :class:`~server.runtime.bus.BusError` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from server.runtime.bus import BusError, Link, check_token

#: Seconds a node's presence entry lives without a refresh: four refreshes, so one slow refresh
#: on a loaded machine does not look like a death.
PRESENCE_TTL = 1.0
#: Seconds between a node's presence refreshes.
PRESENCE_EVERY = 0.25


class OwnershipConflict(BusError):
    """A region's owner changed under us (another driver, or a stale revision)."""


def bucket_names(world: str) -> tuple[str, str]:
    """The owners and presence bucket names of ``world``."""
    check_token("world name", world)
    return f"paratick_{world}_owners", f"paratick_{world}_nodes"


async def _buckets(link: Link, world: str) -> tuple[Any, Any]:
    owners_name, nodes_name = bucket_names(world)
    js = link.nc.jetstream()
    try:
        owners = await js.create_key_value(bucket=owners_name, history=1)
        nodes = await js.create_key_value(bucket=nodes_name, history=1, ttl=PRESENCE_TTL)
    except Exception as exc:
        raise BusError(f"the bus has no usable JetStream for the ownership buckets ({exc!r}); "
                       "enable it in nats-server's config: jetstream { store_dir: ... }") from exc
    return owners, nodes


class Ownership:
    """The driver's view of one world's buckets.

    Args:
        link: the driver's connection.
        world: the world's name.

    Raises:
        BusError: the bus has no JetStream.
    """

    def __init__(self, link: Link, world: str) -> None:
        self.link = link
        self.world = world
        self._owners, self._nodes = link.run(_buckets(link, world))

    def owners(self, regions: int) -> dict[int, tuple[str, int]]:
        """``region -> (node, revision)`` for every region of ``0..regions-1`` that has an
        owner.  Each is read by key: a listing of the bucket goes through a consumer and was
        seen to come back empty on a loaded machine.

        Raises:
            BusError: a read failed for another reason than "no such key".
        """
        from nats.js.errors import KeyNotFoundError

        async def read() -> dict[int, tuple[str, int]]:
            out: dict[int, tuple[str, int]] = {}
            for region in range(regions):
                try:
                    entry = await self._owners.get(f"r{region}")
                except KeyNotFoundError:
                    continue
                except Exception as exc:
                    raise BusError(f"cannot read the owner of region {region}: {exc!r}") from exc
                out[region] = (bytes(entry.value or b"").decode(), int(entry.revision or 0))
            return out

        result: dict[int, tuple[str, int]] = self.link.run(read())
        return result

    def assign(self, table: Mapping[int, str]) -> dict[int, int]:
        """Make ``table`` (region -> node) the owners, each region by compare-and-set on the
        revision just read; returns each region's new revision.

        Raises:
            OwnershipConflict: a region changed between our read and our write.
        """
        from nats.js.errors import KeyWrongLastSequenceError

        current = self.owners(max(table, default=-1) + 1)

        async def write() -> dict[int, int]:
            revisions: dict[int, int] = {}
            for region, node in sorted(table.items()):
                key = f"r{region}"
                try:
                    if region in current:
                        if current[region][0] == node:
                            revisions[region] = current[region][1]
                            continue
                        revisions[region] = await self._owners.update(
                            key, node.encode(), last=current[region][1])
                    else:
                        revisions[region] = await self._owners.create(key, node.encode())
                except KeyWrongLastSequenceError as exc:
                    raise OwnershipConflict(f"region {region} of world {self.world!r} changed "
                                            "owner under this driver (another driver?)") from exc
            return revisions

        result: dict[int, int] = self.link.run(write())
        return result

    def complete(self, regions: int) -> bool:
        """Whether every region ``0..regions-1`` has an owner."""
        return len(self.owners(regions)) == regions

    def present(self, nodes: Iterable[str]) -> set[str]:
        """Those of ``nodes`` whose presence entry is alive.  Each is read by key (a listing
        of the bucket goes through a consumer, slower, and was seen to miss live keys on a
        loaded cluster); a read that fails for any reason but "no such key" counts as present:
        only an entry known to be gone is a lost node."""
        from nats.js.errors import KeyNotFoundError

        async def read() -> set[str]:
            alive: set[str] = set()
            for node in nodes:
                try:
                    await self._nodes.get(node)
                except KeyNotFoundError:
                    continue
                except Exception:
                    pass
                alive.add(node)
            return alive

        result: set[str] = self.link.run(read())
        return result


def keep_present(link: Link, world: str, node: str, info: bytes) -> None:
    """Refresh ``node``'s presence entry every :data:`PRESENCE_EVERY` s on the link's loop,
    until the link closes.  A bus without JetStream: nothing happens (the node still works;
    its driver sees it only through the process table or the tick watchdog)."""
    async def refresh() -> None:
        try:
            _, nodes = await _buckets(link, world)
        except BusError:
            return
        while not link.closed.is_set():
            with contextlib.suppress(Exception):
                await nodes.put(node, info)
            await asyncio.sleep(PRESENCE_EVERY)

    link.spawn(refresh())


__all__ = ["PRESENCE_EVERY", "PRESENCE_TTL", "Ownership", "OwnershipConflict", "bucket_names",
           "keep_present"]
