"""Attribute, event and key names the tracing layer writes (docs/tracing.md lists them all).

The ``messaging.*`` names follow the OpenTelemetry messaging semantic conventions (the
``send``/``process`` operation types and ``messaging.operation.name``); ``soniq.*`` names are
ours. Spelled out here rather than imported from the incubating semconv package, whose
module layout is not a stable API.
"""

from __future__ import annotations

from typing import Final

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
MESSAGING_CLIENT_ID: Final = "messaging.client.id"
ERROR_TYPE: Final = "error.type"

SYSTEM: Final = "soniq"

JOB_NAME: Final = "soniq.job.name"
JOB_ATTEMPT: Final = "soniq.job.attempt"
JOB_MAX_ATTEMPTS: Final = "soniq.job.max_attempts"
JOB_PRIORITY: Final = "soniq.job.priority"
JOB_QUEUE_WAIT: Final = "soniq.job.queue_wait_seconds"
JOB_OUTCOME: Final = "soniq.job.outcome"
JOB_NEXT_ATTEMPT_AT: Final = "soniq.job.next_attempt_at"
JOB_RETRY_DELAY: Final = "soniq.job.retry_delay_seconds"
JOB_REVIVED: Final = "soniq.job.revived"
JOB_TIMEOUT: Final = "soniq.job.timeout_seconds"
JOB_DELAY: Final = "soniq.job.delay_seconds"
JOB_SCHEDULED_AT: Final = "soniq.job.scheduled_at"
JOB_ARGS_PREFIX: Final = "soniq.job.args."
# On the `send` span of a schedule's fire (or trigger): which schedule, for which fire time.
SCHEDULE_NAME: Final = "soniq.schedule.name"
SCHEDULE_FIRE_TIME: Final = "soniq.schedule.fire_time"
# Job control (docs/job-control.md): on a send span, the enqueue met an existing unique job.
JOB_DEDUPLICATED: Final = "soniq.job.deduplicated"
JOB_REPLACED: Final = "soniq.job.replaced"
JOB_DEDUPLICATED_COUNT: Final = "soniq.job.deduplicated_count"
JOB_SNOOZE_DELAY: Final = "soniq.job.snooze_seconds"
JOB_SNOOZE_REASON: Final = "soniq.job.snooze_reason"

# On links: which relation a link stands for.
LINK_TYPE: Final = "soniq.link.type"
LINK_ENQUEUE: Final = "enqueue"
LINK_PREVIOUS_ATTEMPT: Final = "previous_attempt"

EVENT_DEAD_LETTER: Final = "soniq.job.dead_letter"
EVENT_INTERRUPTED: Final = "soniq.job.interrupted"
EVENT_SNOOZED: Final = "soniq.job.snoozed"
EVENT_CANCELLED: Final = "soniq.job.cancelled"

# error.type for a job that ran past its timeout (as HTTP client spans use "timeout").
TIMEOUT_ERROR_TYPE: Final = "timeout"

# Key in a job's trace_context under which a failed attempt leaves its own span context
# (a W3C traceparent), so the next attempt, wherever it runs, can link to it.
PREVIOUS_ATTEMPT_KEY: Final = "soniq-previous-attempt"
