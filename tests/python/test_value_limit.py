"""A value over the daemon's value_limit (no Redis tier): refused by the client
before it is sent, with a WARNING that names the key (STRICT: ValueTooLarge
naming it); compressed first when COMPRESSOR is set, so a compressible value
over the limit is stored."""
from __future__ import annotations

import asyncio
import logging
import os

import pytest

from nearcache import ValueTooLarge

BIG = os.urandom(1 << 20)  # incompressible, over the default 1 MiB value_limit with its header


def test_refused_with_a_warning_naming_the_key(daemon, make_cache, caplog):
    c = make_cache(daemon, WARN_INTERVAL=0)
    with caplog.at_level(logging.WARNING, logger="nearcache"):
        c.set("too-big", BIG)
        asyncio.run(c.aset("too-big-async", BIG))
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("VALUE_TOO_LARGE" in m and "':1:too-big'" in m and "value_limit" in m for m in msgs), msgs
    assert any("':1:too-big-async'" in m for m in msgs), msgs
    assert c.get("too-big") is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nearcache"):
        assert c.set_many({"a": 1, "too-big-many": BIG}) == ["too-big-many"]
    assert "':1:too-big-many'" in caplog.text and "value_limit" in caplog.text


def test_strict_raises_naming_the_key(daemon, make_cache):
    c = make_cache(daemon, STRICT=True)
    with pytest.raises(ValueTooLarge, match=r"the value of b':1:strict-big' is \d+ bytes, over the daemon's "
                                            r"value_limit of 1048576"):
        c.set("strict-big", BIG)


def test_compressible_value_over_the_limit_is_stored_compressed(daemon, make_cache):
    c = make_cache(daemon, COMPRESSOR="zstd", SYNC_WRITES=True)
    v = "abc" * (1 << 20)  # 3 MiB of text
    c.set("big-text", v)
    assert c.get("big-text") == v
