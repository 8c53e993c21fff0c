-- renew: keep this replica's in-flight leases and idempotency claims alive.
-- KEYS: 1 leases zset, 2.. claim hashes
-- ARGV: 1 ttl ms, 2 n holds, 3..2+n holds, then the owner of each claim in KEYS order
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, 2 + n do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
for j = 2, #KEYS do
  local c = redis.call('HMGET', KEYS[j], 'o', 's')
  if c[1] == ARGV[2 + n + j - 1] and not c[2] then redis.call('PEXPIRE', KEYS[j], ttl) end
end
return 1
