-- recover: the settlement intents of requests whose replica died (their lease ran out and no
-- renewal came), for the caller to settle on its behalf. Each one returned is leased to the
-- caller for a while, so other replicas asking at the same time do not get it too; if the
-- caller dies as well, it comes back. Settling it (settle.lua) removes it.
-- KEYS: 1 live zset (settlement key -> lease end), 2 intents hash
-- ARGV: 1 grace ms (how long past its lease end an intent is left to a late renewal), 2 at most,
--       3 ms the caller holds what it gets
-- Returns: settlement key, intent, relayed tokens ("" unknown), for each
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
local found = {}
for _, key in ipairs(due) do
  local intent = redis.call('HMGET', KEYS[2], key, key .. ':t')
  if intent[1] then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), key)
    found[#found + 1] = key
    found[#found + 1] = intent[1]
    found[#found + 1] = intent[2] or ''
  else  -- settled between its last renewal and now, but its entry here was left: drop it
    redis.call('ZREM', KEYS[1], key)
  end
end
return found
