"""Which Redis error replies the worker waits out, and which mean its group is gone."""

from __future__ import annotations

import pytest
import redis

from tuneserve.exceptions import InvalidInputError
from tuneserve.queueing.connection import check_stream, group_lost, transient


@pytest.mark.parametrize(
    ("exc", "lost", "wait"),
    [
        (redis.ResponseError("NOGROUP No such key 's' or consumer group 'g'"), True, False),
        (redis.ResponseError("UNBLOCKED the stream key no longer exists"), True, False),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), 0, 1),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), False, True),
        (redis.ResponseError("BUSYGROUP Consumer Group name already exists"), False, False),
        (redis.ResponseError("WRONGTYPE Operation against a key"), False, False),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory"), 0, 1),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"), 0, 1),
    ],
)
def test_error_replies_are_sorted(exc, lost, wait):
    assert (group_lost(exc), transient(exc)) == (bool(lost), bool(wait))


def test_a_stream_name_of_another_type_is_refused_with_a_hint():
    check_stream("none", "s")
    check_stream("stream", "s")
    with pytest.raises(InvalidInputError, match="--stream 's' names a Redis key of type hash"):
        check_stream("hash", "s")
