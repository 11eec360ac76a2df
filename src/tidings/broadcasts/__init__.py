"""API-triggered broadcasts: ``POST /v1/campaigns/{id}/triggers`` and the job that turns a trigger's
audience into journeys."""
