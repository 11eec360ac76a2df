"""ORM tables, one module per aggregate. Importing this package registers every table."""

from tidings.models.ai import AccountAi, AuditEntry, CreditEntry, DataIndexEntry
from tidings.models.assistant import AssistantConversation
from tidings.models.base import Base
from tidings.models.campaign import (
    BroadcastTrigger,
    BroadcastTriggerError,
    Campaign,
    CampaignAction,
    CampaignEntry,
    CampaignTimer,
    CampaignVersion,
    Journey,
    JourneyStep,
)
from tidings.models.delivery import Delivery, DeliveryMetricReport
from tidings.models.event import Event, Form, PipelinesMessage
from tidings.models.job import Job
from tidings.models.messaging import AddressSuppression, Layout, MessageTemplate, Snippet, SubscriptionTopic
from tidings.models.newsletter import Newsletter, NewsletterTestGroup
from tidings.models.object import Object, ObjectType, Relationship
from tidings.models.person import Activity, AnonymousProfile, Device, Person, PersonRow, Suppression
from tidings.models.segment import Segment, SegmentMembership, SegmentTimer
from tidings.models.sender import SenderIdentity
from tidings.models.webhook import ReportingWebhook, WebhookPost
from tidings.models.workspace import Account, Credential, Workspace

__all__ = [
    "Account",
    "AccountAi",
    "Activity",
    "AddressSuppression",
    "AnonymousProfile",
    "AssistantConversation",
    "AuditEntry",
    "Base",
    "BroadcastTrigger",
    "BroadcastTriggerError",
    "Campaign",
    "CampaignAction",
    "CampaignEntry",
    "CampaignTimer",
    "CampaignVersion",
    "Credential",
    "CreditEntry",
    "DataIndexEntry",
    "Delivery",
    "DeliveryMetricReport",
    "Device",
    "Event",
    "Form",
    "Job",
    "Journey",
    "JourneyStep",
    "Layout",
    "MessageTemplate",
    "Newsletter",
    "NewsletterTestGroup",
    "Object",
    "ObjectType",
    "Person",
    "PersonRow",
    "PipelinesMessage",
    "Relationship",
    "ReportingWebhook",
    "Segment",
    "SegmentMembership",
    "SegmentTimer",
    "SenderIdentity",
    "Snippet",
    "SubscriptionTopic",
    "Suppression",
    "WebhookPost",
    "Workspace",
]
