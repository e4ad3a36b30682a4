"""The resources served as views of stored ones (resources.View), and with them all that is served."""
from __future__ import annotations

from netplane.api import eventsv1
from netplane.api.resources import RESOURCES, Resource, View

VIEWS: dict[Resource, View] = {eventsv1.RESOURCE: eventsv1.VIEW}
SERVED: tuple[Resource, ...] = (*RESOURCES, *VIEWS)
