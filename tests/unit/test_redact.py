"""The one function that masks secrets in what naq shows."""

from __future__ import annotations

import pytest

from naq.redact import has_userinfo, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://u:pw@h:4222", "nats://u:***@h:4222"),
        ("nats://tok@h:4222", "nats://***@h:4222"),
        ("tls://u:pw@h", "tls://u:***@h"),
        ("nats://u:p@ss@h:1", "nats://u:***@h:1"),  # a raw "@" in the password
        ("nats://u:pw@h1:1,nats://v:pw2@h2:2", "nats://u:***@h1:1,nats://v:***@h2:2"),
        ("nats://u:@h", "nats://u:***@h"),
        (
            "cannot connect to nats://u:pw@h:1: refused; retry nats://t@h:2/x",
            "cannot connect to nats://u:***@h:1: refused; retry nats://***@h:2/x",
        ),
        ("mail alice@example.com", "mail alice@example.com"),  # not a URL
        ("nats://h/path@x", "nats://h/path@x"),  # "@" after the host is not userinfo
    ],
)
def test_urls_lose_their_passwords_and_tokens(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_known_secrets_are_masked_anywhere() -> None:
    assert redact("server: bad 'hunter2'", ["hunter2", None, ""]) == "server: bad '***'"
    # the longer secret first, so no part of it is left
    assert redact("abcdef", ["abc", "abcdef"]) == "***"


def test_has_userinfo() -> None:
    assert has_userinfo("nats://u:pw@h")
    assert has_userinfo("nats://h1,nats://tok@h2")
    assert not has_userinfo("nats://h:4222")
    assert not has_userinfo("nats://h:4222,tls://h2:4443")
