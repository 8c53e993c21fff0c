-- renew: keep this replica's in-flight leases, settlement intents and idempotency claims alive.
-- KEYS: 1 leases zset, 2 live zset (intents' lease ends), 3 intents hash, 4.. claim hashes
-- ARGV: 1 ttl ms, 2 n holds, 3 n intents, then the n holds, then per intent its settlement
--       key and the completion tokens relayed so far (-1: unknown), then the owner of each
--       claim in KEYS order
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl, n, m = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
local base = 3 + n
for i = 1, m do
  local key, relayed = ARGV[base + 2 * i - 1], ARGV[base + 2 * i]
  -- An intent already settled (or recovered by another replica) is not brought back.
  if redis.call('ZSCORE', KEYS[2], key) then
    redis.call('ZADD', KEYS[2], now + ttl, key)
    if relayed ~= '-1' then redis.call('HSET', KEYS[3], key .. ':t', relayed) end
  end
end
base = base + 2 * m
for j = 4, #KEYS do
  local c = redis.call('HMGET', KEYS[j], 'o', 's')
  if c[1] == ARGV[base + j - 3] and not c[2] then redis.call('PEXPIRE', KEYS[j], ttl) end
end
return 1
