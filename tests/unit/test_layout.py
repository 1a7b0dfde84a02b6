"""Every server-side name derives from the namespace; pin the names other tools rely on."""

from __future__ import annotations

import pytest

from naq.errors import ConfigurationError
from naq.transport.names import Layout


def test_names_for_the_default_namespace() -> None:
    layout = Layout("naq")
    assert layout.stream == "NAQ_JOBS_naq"
    assert layout.failed_stream == "NAQ_FAILED_naq"
    assert layout.results_bucket == "naq_results"
    assert layout.workers_bucket == "naq_workers"
    assert layout.job_subject("default", "j1") == "naq.jobs.default.j1"
    assert layout.queue_subjects("default") == "naq.jobs.default.*"
    assert layout.failed_subject("default") == "naq.failed.default"
    assert layout.consumer("default") == "default"
    assert layout.pull_subject("default") == "$JS.API.CONSUMER.MSG.NEXT.NAQ_JOBS_naq.default"
    assert layout.kv_subject("naq_results", "j1") == "$KV.naq_results.j1"


def test_names_for_another_namespace() -> None:
    layout = Layout("shop-eu_1")
    assert layout.stream == "NAQ_JOBS_shop-eu_1"
    assert layout.job_subject("mail", "j1") == "shop-eu_1.jobs.mail.j1"
    assert layout.results_bucket == "shop-eu_1_results"


@pytest.mark.parametrize("queue", ["", "a.b", "a b", "*", ">", "q>", "a\tb", "ü"])
@pytest.mark.parametrize("method", ["queue_subjects", "failed_subject", "consumer", "pull_subject"])
def test_invalid_queue_names_are_refused(method: str, queue: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        getattr(Layout("naq"), method)(queue)


@pytest.mark.parametrize("namespace", ["", "a.b", "a b", "*", ">"])
def test_invalid_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid namespace name"):
        Layout(namespace)


def _streams(layout: Layout) -> set[str]:
    return {layout.stream, layout.failed_stream}


@pytest.mark.parametrize(
    ("first", "second"), [("foo", "FOO"), ("foo", "Foo"), ("x", "x_FAILED"), ("x", "x_failed")]
)
def test_distinct_namespaces_never_share_a_stream(first: str, second: str) -> None:
    """Two namespaces must not share anything on one server.

    A shared stream name means the second namespace finds the stream already
    declared with the first one's subjects, and its publishes have no stream.
    """
    assert not _streams(Layout(first)) & _streams(Layout(second))


def test_queue_of_reads_the_queue_from_a_job_subject() -> None:
    layout = Layout("shop")
    assert layout.queue_of(layout.job_subject("emails", "j1")) == "emails"
    assert layout.queue_of(layout.sched_subject("j1")) is None
    assert layout.queue_of("other.jobs.emails.j1") is None
