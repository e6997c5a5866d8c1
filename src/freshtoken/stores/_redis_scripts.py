"""The Lua scripts of [`RedisStore`][freshtoken.stores.redis.RedisStore]'s fenced writes, and
reading back the generation they write (the rules are in `freshtoken.stores.redis`)."""

from __future__ import annotations

import re

__all__ = ["CLEAR", "SAVE", "generation_of"]

SAVE = """
local stored = redis.call('HGET', KEYS[1], 'generation')
if stored and (#stored > 14 or not string.match(stored, '^[0-9]+$')) then
  return redis.error_reply('the stored generation is not one freshtoken wrote')
end
local generation = tonumber(stored or ARGV[5])
local present = redis.call('HEXISTS', KEYS[1], 'tokens') == 1
if ARGV[1] ~= '' then
  local expected = tonumber(ARGV[1])
  if expected == 0 then
    if present then return {0, generation} end
  elseif (not present) or expected ~= generation then
    return {0, generation}
  end
end
generation = generation + 1
redis.call('HSET', KEYS[1], 'generation', generation, 'tokens', ARGV[2])
redis.call('PUBLISH', ARGV[3], generation .. ' ' .. ARGV[4])
return {1, generation}
"""

CLEAR = """
if redis.call('HEXISTS', KEYS[1], 'tokens') == 0 then return 0 end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HDEL', KEYS[1], 'tokens')
redis.call('PUBLISH', ARGV[1], generation .. ' ' .. ARGV[2])
return generation
"""

# What the scripts write: at most 14 digits, which Lua's doubles and their "%.14g" formatting
# keep exact (generations start below 2**40, some 1.1e12).
_GENERATION_RE = re.compile(rb"[0-9]{1,14}")


def generation_of(raw: object) -> int | None:
    """The generation in a hash field or message (bytes, or str under decode_responses);
    None if it is not one freshtoken wrote."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    if not isinstance(raw, bytes) or _GENERATION_RE.fullmatch(raw) is None:
        return None
    return int(raw)
