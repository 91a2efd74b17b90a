"""Live web dashboard: a small FastAPI app over Tiled and the broker (see :mod:`xafs_stream.web.app`).

``start_dashboard(tiled_client, frontend)`` runs it in a background thread and returns a handle with ``url``
and ``close()``; ``xafs-stream dashboard --tiled-uri ... --frontend ...`` runs it standalone.
"""

from .server import DashboardHandle, start_dashboard

__all__ = ["DashboardHandle", "start_dashboard"]
