"""ORM tables, one module per aggregate. Importing this package registers every table."""

from tidings.models.base import Base
from tidings.models.delivery import Delivery, DeliveryMetricReport
from tidings.models.event import Event, Form, PipelinesMessage
from tidings.models.job import Job
from tidings.models.object import Object, ObjectType, Relationship
from tidings.models.person import Activity, AnonymousProfile, Device, Person, Suppression
from tidings.models.segment import Segment, SegmentMembership, SegmentTimer, SegmentTransition
from tidings.models.workspace import Account, Credential, Workspace

__all__ = [
    "Account",
    "Activity",
    "AnonymousProfile",
    "Base",
    "Credential",
    "Delivery",
    "DeliveryMetricReport",
    "Device",
    "Event",
    "Form",
    "Job",
    "Object",
    "ObjectType",
    "Person",
    "PipelinesMessage",
    "Relationship",
    "Segment",
    "SegmentMembership",
    "SegmentTimer",
    "SegmentTransition",
    "Suppression",
    "Workspace",
]
