"""The analysis worker: units in (from the broker, or from ``reprocess``), results out (into Tiled).

- :mod:`.loop`: :class:`Worker`, the process's ZeroMQ loop (credits, heartbeats, reconnects, DONE/STORED);
- :mod:`.handler`: :class:`UnitHandler`, runs a unit's analyses and stores every record with retries (the
  worker and ``reprocess`` both use it);
- :mod:`.processing`: :func:`~.processing.process_unit`, the analyses of one unit in dependency order;
- :mod:`.mapowner`: :class:`MapOwner`, the whole-map result of the maps whose tiles this worker owns;
- :mod:`.reprocess`: units re-derived from a raw run in Tiled, to fill missing results.
"""

from .handler import UnitHandler
from .loop import Worker
from .mapowner import MapOwner

__all__ = ["MapOwner", "UnitHandler", "Worker"]
