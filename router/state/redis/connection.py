"""redis-py's asyncio connection with commands packed by hiredis, in C."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import DataError


class CPackedConnection(aioredis.Connection):
    """Commands packed by hiredis, in C. redis-py's asyncio connection packs them in Python
    (its sync one uses hiredis): with two scripts of ~20 arguments per request that was ~12 %
    of the router's CPU in py-spy at concurrency 64."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if type(args[0]) is str and " " in args[0]:  # "SCRIPT LOAD": the server wants the words apart
            args = (*args[0].encode().split(), *args[1:])
        try:  # hiredis writes floats as repr() does, as redis-py does (checked on 200,000 values)
            return [hiredis.pack_command(args)]
        except TypeError as error:  # None, bool, ...: as redis-py's encoder refuses them
            raise DataError(str(error)) from None

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        """One buffer for the whole round trip; redis-py's own loops over every chunk in Python
        to cut the buffer in pieces, for a socket write it makes in one call anyway."""
        return [b"".join([self.pack_command(*command)[0] for command in commands])]


def closed_by_server(conn: aioredis.Connection) -> bool:
    """The server closed this idle connection (its reader saw the end, or a reset): a write to it
    would fail the call, not reconnect. redis-py's pool checks the same before handing one out,
    and also refuses one with unread data, which cannot happen here: every reply is read."""
    reader = conn._reader  # redis-py's own stream reader: None once disconnected
    return reader is not None and (reader.at_eof() or reader.exception() is not None)
