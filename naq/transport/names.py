"""Every subject, stream, consumer and bucket name naq uses: nothing else spells one.

All names derive from the namespace, so two namespaces on one server never share
anything. Every part that comes from outside (a queue name, a job id) is validated
here, where it becomes a subject or a key: a job id of ``*`` or ``>`` would otherwise
turn "this job" into "every job" in a purge, a read or a publish. Stream names keep
the namespace's case and use distinct prefixes, so no two namespaces can map to one
stream ("foo" and "FOO", or "x" and "x_FAILED").

| thing             | name                                              |
| ----------------- | ------------------------------------------------- |
| job stream        | ``NAQ_JOBS_{ns}``                                 |
| ready jobs        | ``{ns}.jobs.{queue}.{job_id}``                    |
| delayed jobs      | ``{ns}.sched.{job_id}``                           |
| failed jobs       | ``NAQ_FAILED_{ns}``, ``{ns}.failed.{queue}``      |
| exhausted jobs    | ``NAQ_ADVISORIES_{ns}`` (the server's advisories) |
| cancellation      | core ``{ns}.control.cancel``                      |
| results           | KV ``{ns}_results``                               |
| dependencies      | KV ``{ns}_deps``                                  |
| workers           | KV ``{ns}_workers``                               |
| schedules         | KV ``{ns}_schedules``                             |
| leader lease      | KV ``{ns}_leader``                                |
| NASQueue, durable | ``NASQ_{ns}``, ``{ns}.nasq.{priority}.{subject}`` |

The JetStream API subjects naq addresses directly (a pull request, a purge with a
filter) are spelled here too, since nats-py either lacks the call or hides a
field naq needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from naq.job import validate_job_id
from naq.settings import validate_name

JOBS_TOKEN = "jobs"
SCHED_TOKEN = "sched"
HELD_TOKEN = "held"
FAILED_TOKEN = "failed"
CONTROL_TOKEN = "control"
NASQ_TOKEN = "nasq"
"""The token after a NASQueue namespace under which the durable store keeps messages."""
NASQ_STORED_TOKEN = "nasq-stored"
"""Where a durable NASQueue announces (an empty message) each level it stored into."""
RESERVED_TOKENS = {
    JOBS_TOKEN: 3,  # {ns}.jobs.{queue}.{job_id}
    SCHED_TOKEN: 2,  # {ns}.sched.{job_id}
    HELD_TOKEN: 2,  # {ns}.held.{job_id}
    FAILED_TOKEN: 2,  # {ns}.failed.{queue}
    CONTROL_TOKEN: 0,  # {ns}.control.*: any length
    NASQ_TOKEN: 0,
    NASQ_STORED_TOKEN: 0,
}
"""First tokens naq uses after a namespace, with the token count naq's subjects have
there (0: every subject under that token is naq's). NASQueue refuses them."""

SCHEDULE_HEADER = "Nats-Schedule"
SCHEDULE_TARGET_HEADER = "Nats-Schedule-Target"
"""A delayed job's headers: when the server fires it, and the subject it lands on."""
API_PREFIX = "$JS.API"
HELD_CONSUMER = "naq:held"
"""The job stream's consumer of jobs waiting for dependencies, shared by every
supervisor. The colon is in no queue name, so no queue's consumer can be this one."""
UNKNOWN_QUEUE = "unknown"
"""The failed stream's queue for a message that names none naq can read."""
DEPENDS_ON_HEADER = "Naq-Depends-On"
"""A held job's dependencies: a JSON array of job ids (ASCII-escaped, since job ids may
hold any character a subject takes and headers travel as ASCII)."""
DEAD_LETTER_CONSUMER = "dead-letter"
"""The advisory stream's one durable consumer, shared by every supervisor."""
SCAN_CONSUMER_PREFIX = "naq-scan-"
"""Ephemeral consumers of one scan, recognisable in ``nats consumer ls``."""
NASQ_CAPTURE_GROUP = "nasq-durable"
"""The queue group of a durable NASQueue's ``subscribe_and_queue``."""
LEASE_KEY = "scheduler"
"""The one key of the leader bucket: the scheduler lease, written by the scheduler
role and read by anyone asking who leads (``naq.state.workers.current_leader``)."""


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket (nats-py's naming, so its KV API finds it)."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """A key's subject; ``key=">"`` is every key of the bucket."""
    return f"$KV.{bucket}.{key}"


def pull_subject(stream: str, consumer: str) -> str:
    """Where a pull request for ``consumer`` goes (nats-py's ``fetch`` waits for a whole
    batch; naq's pullers ask the API directly)."""
    return f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def purge_api_subject(stream: str) -> str:
    """The stream purge API (nats-py's ``purge_stream`` drops the purged count)."""
    return f"{API_PREFIX}.STREAM.PURGE.{stream}"


def stream_stepdown_api_subject(stream: str) -> str:
    """Asks a replicated stream's leader to hand over (to a preferred peer, if named)."""
    return f"{API_PREFIX}.STREAM.LEADER.STEPDOWN.{stream}"


def consumer_stepdown_api_subject(stream: str, consumer: str) -> str:
    return f"{API_PREFIX}.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"


def consumer_info_api_subject(stream: str, consumer: str) -> str:
    """The consumer info API: what metrics read a queue's backlog from."""
    return f"{API_PREFIX}.CONSUMER.INFO.{stream}.{consumer}"


def stream_info_api_subject(stream: str) -> str:
    """The stream info API (nats-py's ``stream_info`` cannot page the subjects it
    lists: past 100,000 the server sends them in pages, by ``offset``)."""
    return f"{API_PREFIX}.STREAM.INFO.{stream}"


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of one namespace's resources."""

    namespace: str

    def __post_init__(self) -> None:
        validate_name("namespace", self.namespace)

    @property
    def stream(self) -> str:
        return f"NAQ_JOBS_{self.namespace}"

    @property
    def failed_stream(self) -> str:
        return f"NAQ_FAILED_{self.namespace}"

    @property
    def advisory_stream(self) -> str:
        return f"NAQ_ADVISORIES_{self.namespace}"

    @property
    def results_bucket(self) -> str:
        return f"{self.namespace}_results"

    @property
    def workers_bucket(self) -> str:
        return f"{self.namespace}_workers"

    @property
    def deps_bucket(self) -> str:
        return f"{self.namespace}_deps"

    @property
    def schedules_bucket(self) -> str:
        return f"{self.namespace}_schedules"

    @property
    def leader_bucket(self) -> str:
        return f"{self.namespace}_leader"

    def job_subject(self, queue: str, job_id: str) -> str:
        """One subject per job: "is this job still queued?" is then one lookup by subject."""
        return f"{self.job_subject_prefix(queue)}{validate_job_id(job_id)}"

    def job_subject_prefix(self, queue: str) -> str:
        """A queue's job subjects without the job id, for a producer that appends ids it
        has validated or made (one concatenation per job instead of a call)."""
        return f"{self.namespace}.{JOBS_TOKEN}.{validate_name('queue', queue)}."

    def queue_subjects(self, queue: str) -> str:
        """Every job of ``queue``: the consumer's filter, and what a purge removes."""
        return f"{self.namespace}.{JOBS_TOKEN}.{validate_name('queue', queue)}.*"

    def queue_of(self, job_subject: str) -> str | None:
        """The queue in a job subject (``{ns}.jobs.{queue}.{job_id}``), if it is one."""
        head, _, rest = job_subject.partition(f"{self.namespace}.{JOBS_TOKEN}.")
        return rest.split(".", 1)[0] if not head and rest else None

    def any_queue_subject(self, job_id: str) -> str:
        """The job's subject whatever its queue: a job id is unique in a namespace."""
        return f"{self.namespace}.{JOBS_TOKEN}.*.{validate_job_id(job_id)}"

    def failed_subject(self, queue: str | None) -> str:
        """One queue's failed jobs; every queue's with ``None`` (the stream's subjects)."""
        which = "*" if queue is None else validate_name("queue", queue)
        return f"{self.namespace}.{FAILED_TOKEN}.{which}"

    def failed_queue_of(self, failed_subject: str) -> str | None:
        """The queue in a failed-stream subject (``{ns}.failed.{queue}``), if it is one."""
        head, _, queue = failed_subject.partition(f"{self.namespace}.{FAILED_TOKEN}.")
        return queue if not head and queue and "." not in queue else None

    def consumer(self, queue: str) -> str:
        """Durable pull consumer shared by every supervisor of ``queue``."""
        return validate_name("queue", queue)

    @property
    def cancel_subject(self) -> str:
        """Core NATS (not stored): every supervisor hears which job to stop."""
        return f"{self.namespace}.{CONTROL_TOKEN}.cancel"

    def sched_subject(self, job_id: str) -> str:
        return f"{self.namespace}.{SCHED_TOKEN}.{validate_job_id(job_id)}"

    def held_subject(self, job_id: str) -> str:
        """Where a producer puts a job that waits for its dependencies, until a
        supervisor takes it into the deps KV (producers never write that bucket)."""
        return f"{self.namespace}.{HELD_TOKEN}.{validate_job_id(job_id)}"

    @property
    def held_subjects(self) -> str:
        return f"{self.namespace}.{HELD_TOKEN}.*"

    def job_of_held(self, subject: str) -> str | None:
        """The job id in a held subject (``{ns}.held.{job_id}``), if it is one."""
        head, _, rest = subject.partition(f"{self.namespace}.{HELD_TOKEN}.")
        return rest if not head and rest and "." not in rest else None

    @property
    def sched_subjects(self) -> str:
        """Every delayed job of every queue (a delayed job's subject names no queue)."""
        return f"{self.namespace}.{SCHED_TOKEN}.*"

    def kv_subject(self, bucket: str, key: str) -> str:
        return kv_subject(bucket, key)

    def pull_subject(self, queue: str) -> str:
        return pull_subject(self.stream, self.consumer(queue))

    @property
    def stream_subjects(self) -> list[str]:
        """What the job stream holds: every job of every queue, the delayed ones, and
        those waiting to be taken in for their dependencies."""
        return [
            f"{self.namespace}.{JOBS_TOKEN}.*.*",
            f"{self.namespace}.{SCHED_TOKEN}.*",
            self.held_subjects,
        ]

    @property
    def buckets(self) -> tuple[str, ...]:
        return (
            self.results_bucket,
            self.workers_bucket,
            self.deps_bucket,
            self.schedules_bucket,
            self.leader_bucket,
        )

    @property
    def advisory_subject(self) -> str:
        """The server's advisory for a job of this namespace that ran out of deliveries."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*"

    def held_key(self, job_id: str) -> str:
        """The deps KV key of a job waiting for its dependencies."""
        return f"held.{validate_job_id(job_id)}"

    def waiters_key(self, dep: str) -> str:
        """The deps KV key listing the jobs that wait for ``dep``."""
        return f"waiters.{validate_job_id(dep)}"

    @property
    def all_held(self) -> str:
        """Every held key: what the re-check of held jobs reads."""
        return "held.>"

    @property
    def all_waiters(self) -> str:
        """Every waiters key: what the supervisors' dependency watch follows."""
        return "waiters.>"

    def dep_of_waiters_key(self, key: str) -> str:
        return key.removeprefix("waiters.")


@dataclass(frozen=True, slots=True)
class NasqLayout:
    """The names of a durable NASQueue namespace (one token: it names a stream)."""

    namespace: str

    @property
    def stream(self) -> str:
        return f"NASQ_{self.namespace}"

    @property
    def base(self) -> str:
        """Prefix of every stored message's subject: ``{ns}.nasq.``."""
        return f"{self.namespace}.{NASQ_TOKEN}."

    @property
    def stream_subjects(self) -> list[str]:
        return [f"{self.base}*.>"]

    @property
    def all_messages(self) -> str:
        return f"{self.base}>"

    def level_subjects(self, level: int) -> str:
        """One priority level's messages: its consumer's filter."""
        return f"{self.base}{level}.>"

    def message_subject(self, level: int, subject: str) -> str:
        return f"{self.base}{level}.{subject}"

    def consumer(self, level: int) -> str:
        return f"p{level}"

    def pull_subject(self, level: int) -> str:
        return pull_subject(self.stream, self.consumer(level))

    def stored_subject(self, level: int | None) -> str:
        """The announcement of a stored message of ``level``; every level with None."""
        return f"{self.namespace}.{NASQ_STORED_TOKEN}.{'*' if level is None else level}"


def namespaced(namespace: str, subject: str) -> str:
    """A NASQueue subject inside its namespace (in memory: plain core NATS)."""
    return f"{namespace}.{subject}"
