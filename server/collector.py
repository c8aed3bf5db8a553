"""Python's cyclic garbage collector, set for a server process that runs for days.

Measured at c=16 (bench/checkout.py, with a gc.callbacks timer in the server), an earn spent about
150 us of its 2-3 ms of server CPU in the collector, an empty call about 1 us:

- two thirds in full collections, each walking every object the server built at start-up
  (SQLAlchemy's metadata, the protobuf descriptors, gRPC...), about 100 ms each, one in a thousand
  earns. Frozen after start-up (``gc.freeze``), those objects are never walked again: they live as
  long as the process anyway;
- the rest in young collections: every 700 container objects allocated and not yet freed (the
  default), about one in ten earns, each walking the young objects of every request then in flight.
  At 5,000 they run about once in a few hundred earns, each walking much the same number of objects.

Together: about 10 us an earn. Garbage cycles wait a little longer to be collected: a few thousand
objects more at most.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 5_000


def settle_for_serving() -> None:
    """Freezes what start-up built and makes young collections rarer; call once, when about to serve."""
    gc.collect()  # start-up's garbage goes now rather than frozen with the rest
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *older)
