"""What counts as drift between a stream's or consumer's settings on the server and
naq's configuration (naq.transport.declare._drift)."""

from __future__ import annotations

from nats.js.api import ConsumerConfig, DiscardPolicy, StreamConfig

from naq.transport.declare import DRIFT_CONSUMER, DRIFT_STREAM, _drift


def test_unset_limits_mean_no_limit_and_other_unset_fields_are_not_compared() -> None:
    server = StreamConfig(name="s", max_msg_size=-1, max_bytes=-1, duplicate_window=120.0)
    assert _drift(server, StreamConfig(name="s"), DRIFT_STREAM) == {}
    limited = StreamConfig(name="s", max_msg_size=1024, max_bytes=-1, duplicate_window=120.0)
    assert _drift(limited, StreamConfig(name="s"), DRIFT_STREAM) == {"max_msg_size": (1024, -1)}


def test_each_differing_field_is_named_with_both_values() -> None:
    server = StreamConfig(name="s", num_replicas=1, duplicate_window=120.0)
    want = StreamConfig(name="s", num_replicas=3, duplicate_window=600.0, discard=DiscardPolicy.NEW)
    assert _drift(server, want, DRIFT_STREAM) == {
        "num_replicas": (1, 3),
        "duplicate_window": (120.0, 600.0),
        "discard": (DiscardPolicy.OLD, DiscardPolicy.NEW),  # OLD: the default
    }


def test_seconds_compare_within_a_millisecond() -> None:
    server = ConsumerConfig(ack_wait=30.0000001, max_deliver=100, max_ack_pending=20_000)
    same = ConsumerConfig(ack_wait=30.0, max_deliver=100, max_ack_pending=20_000)
    assert _drift(server, same, DRIFT_CONSUMER) == {}
    raised = ConsumerConfig(ack_wait=60.0, max_deliver=5, max_ack_pending=20_000)
    assert _drift(server, raised, DRIFT_CONSUMER) == {
        "ack_wait": (30.0000001, 60.0),
        "max_deliver": (100, 5),
    }
