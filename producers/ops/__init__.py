"""Operating modelbus: queue statistics, workers online, dead letters (list, replay, purge).

The CLI (`modelbus status`, `modelbus dlq ...`) is a thin layer over these modules; scripts can use
them directly.
"""

from producers.ops.dlq import DeadLetter, ReplayResult, browse, purge, replay
from producers.ops.management import ManagementClient, ManagementUnavailable, management_client
from producers.ops.queues import QueueStats, StatsUnavailable, queue_stats

__all__ = [
    "DeadLetter",
    "ManagementClient",
    "ManagementUnavailable",
    "QueueStats",
    "ReplayResult",
    "StatsUnavailable",
    "browse",
    "management_client",
    "purge",
    "queue_stats",
    "replay",
]
