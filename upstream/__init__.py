"""Upward data flow: transactions, food-test results, device status and alerts pushed to the district and city
supervision platforms (BJ 4.3.4, SZ 7.1.18, SJZ table 1 items 1.5–1.9) through a durable, ordered outbox.

    service = upstream.setup(settings.upstream)
    await service.start(); service.follow(bus_subscription); service.follow(alert_subscription)
    await service.aclose()

docs/upstream.md is the operator's guide.
"""

from upstream.mapping import DATA_CLASSES, map_fields, records_for
from upstream.service import UpstreamService, setup
from upstream.settings import UpstreamSettings, UpstreamTarget

__all__ = ["DATA_CLASSES", "UpstreamService", "UpstreamSettings", "UpstreamTarget", "map_fields", "records_for",
           "setup"]
