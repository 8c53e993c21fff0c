"""Provider simulators: one dialect table per provider, fault injection, real sockets."""

from .dialects import DIALECTS, Dialect
from .server import SimServer

__all__ = ["DIALECTS", "Dialect", "SimServer"]
