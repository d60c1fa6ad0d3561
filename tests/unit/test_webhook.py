"""Webhook signing (Standard Webhooks) and secrets, without a network."""

from __future__ import annotations

import base64

import pytest

from sinks.notify.webhook import signature, signing_key

# The test vector published with the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signatures_match_the_specifications_test_vector():
    key = signing_key(SPEC_SECRET)
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY) != SPEC_SIGNATURE
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY + b" ") != SPEC_SIGNATURE


def test_whsec_secrets_are_base64_keys_other_secrets_their_bytes():
    assert signing_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signing_key("plain shared secret") == b"plain shared secret"
    for bad in ("whsec_!!!", "whsec_", ""):
        with pytest.raises(ValueError, match="secret"):
            signing_key(bad)


def test_the_secret_and_credential_headers_are_masked_in_logs():
    from fanout.config import build_config
    from fanout.observe.logs import config_secrets

    hook = {
        "type": "webhook",
        "url": "https://example.com/hook",
        "secret": SPEC_SECRET,
        "headers": {"Authorization": "Bearer tok-123", "X-Api-Key": "key-456", "X-Tenant": "t"},
    }
    config = build_config({"streams": {"s": {"table": "T"}}, "sinks": {"hook": hook}})
    masked = set(config_secrets(config, env={}))
    assert {SPEC_SECRET, "Bearer tok-123", "key-456"} <= masked
    assert "t" not in masked
