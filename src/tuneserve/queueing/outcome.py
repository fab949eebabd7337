"""What a worker records for one message, and the one Lua script that records it and
acknowledges the message atomically (see docs/queue.md, "Delivery")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .protocol import FIELD, Keys

__all__ = ["FINISH_SCRIPT", "Outcome", "Retention", "finish_call"]


@dataclass
class Outcome:
    """What the finish script records for one message."""

    request_id: str | None
    model: str = ""
    version: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # None: a prediction
    status: int = 400  # of an error, as HTTP would answer it (the client maps it back)
    dead: bool = False  # also a dead letter
    reply_to: str | None = None
    reply_ttl: int | None = None


@dataclass(frozen=True)
class Retention:
    """How long and how much the finish script keeps."""

    group: str
    result_ttl: int
    results_maxlen: int
    dead_maxlen: int


def finish_call(
    keys: Keys,
    keep: Retention,
    entry_id: str,
    fields: dict[str, str],
    outcome: Outcome,
    deliveries: int,
) -> tuple[list[str], list[str | int]]:
    """The ``(KEYS, ARGV)`` of :data:`FINISH_SCRIPT` for ``outcome``."""
    rid, ok = outcome.request_id, outcome.error is None
    body = outcome.body if ok else {"error": outcome.error, "status": outcome.status}
    names = [keys.stream, keys.results, keys.dead, keys.done(rid or f"entry:{entry_id}")]
    names.append(keys.failures)
    if rid and outcome.reply_to:
        names.append(outcome.reply_to)
    args: list[str | int] = [
        keep.group,
        entry_id,
        keep.result_ttl,
        keep.results_maxlen,
        rid or "",
        outcome.model,
        outcome.version,
        "1" if ok else "0",
        json.dumps(body),
        (outcome.error or "") if outcome.dead else "",
        fields.get(FIELD) or json.dumps(fields),
        deliveries,
        "1" if rid else "0",
        json.dumps({"id": rid, "ok": ok, "body": body}),
        outcome.reply_ttl or keep.result_ttl,
        keep.dead_maxlen,
    ]
    return names, args


# Records one outcome of a request and acknowledges its message, atomically:
#   KEYS: stream, results, dead, done marker, failures hash[, reply list]
#   ARGV: group, entry id, done TTL (s), results maxlen, request id, model, version, ok,
#         body (JSON), dead-letter error ('' = none), request as sent, deliveries,
#         write a result ('1'/'0'), reply payload, reply TTL (s), dead letters maxlen
#   Returns {recorded (1/0), the reply key is no list and got no reply (1/0)}.
# Nothing is written before every check that can fail has passed: the numbers EXPIRE, SET EX
# and MAXLEN take are checked first (Redis refuses an expire time past its range, after
# the writes before it), and the reply key's type is read (a key of another type would make
# RPUSH abort the script half-way). A refused call returns an error and writes nothing.
# The done marker (SET NX) makes it idempotent: a message processed twice (a slow worker
# whose message another worker claimed) records one result, one dead letter, one reply.
# The marker holds "<entry id> <results entry id>", a few dozen bytes whatever the answer
# (it lives for the result TTL, outside the results' MAXLEN): a resubmit of an answered id
# (a new message, so a new entry id) gets the answer rebuilt from that results entry pushed
# to its own reply list, or, once the results stream was trimmed past it, an error reply
# saying it was answered. (A marker an older worker wrote holds the reply itself.)
# The entry is then deleted (the request stream holds only what is pending or unread) and
# its last failure, if any, forgotten.
FINISH_SCRIPT = """
for _, i in ipairs({3, 4, 15, 16}) do
  local n = tonumber(ARGV[i])
  if not n or n < 1 or n > 1000000000 or n ~= math.floor(n) then
    return redis.error_reply('ERR finish: argument ' .. i .. ' is ' .. ARGV[i] ..
                             ', not a whole number from 1 to 1e9; nothing recorded')
  end
end
local reply, dropped = #KEYS > 5, 0
if reply then
  local kind = redis.call('TYPE', KEYS[6])['ok']
  if kind ~= 'none' and kind ~= 'list' then reply, dropped = false, 1 end
end
local recorded = 0
if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'EX', ARGV[3]) then
  recorded = 1
  if ARGV[13] == '1' then
    local at = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[5],
                          'model', ARGV[6], 'version', ARGV[7], 'ok', ARGV[8], 'body', ARGV[9])
    redis.call('SET', KEYS[4], ARGV[2] .. ' ' .. at, 'EX', ARGV[3])
  end
  if ARGV[10] ~= '' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[16], '*', 'id', ARGV[5],
               'error', ARGV[10], 'request', ARGV[11], 'deliveries', ARGV[12])
  end
  if reply then
    redis.call('RPUSH', KEYS[6], ARGV[14])
    redis.call('EXPIRE', KEYS[6], ARGV[15])
  end
elseif reply then
  local seen = redis.call('GET', KEYS[4])
  local space = seen and string.find(seen, ' ', 1, true)
  if space and string.sub(seen, 1, space - 1) ~= ARGV[2] then
    local answer, at = string.sub(seen, space + 1), string.sub(seen, space + 1)
    if string.match(at, '^%d+%-%d+$') then
      local found = redis.call('XRANGE', KEYS[2], at, at)[1]
      if found then
        local f = {}
        for i = 1, #found[2], 2 do f[found[2][i]] = found[2][i + 1] end
        answer = '{"id": ' .. cjson.encode(ARGV[5]) .. ', "ok": ' ..
                 (f['ok'] == '1' and 'true' or 'false') .. ', "body": ' .. f['body'] .. '}'
      else
        answer = cjson.encode({id = ARGV[5], ok = false, body = {status = 503,
          error = 'request ' .. ARGV[5] .. ' was answered already; its answer is no ' ..
                  'longer in ' .. KEYS[2] .. ' (trimmed)'}})
      end
    end
    redis.call('RPUSH', KEYS[6], answer)
    redis.call('EXPIRE', KEYS[6], ARGV[15])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
return {recorded, dropped}
"""
