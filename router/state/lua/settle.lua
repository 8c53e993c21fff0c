-- settle: release the lease, reconcile TPM (and RPM), add usage, append the record, keep or
-- drop the idempotency claim. With usage or a record it is applied once per settlement key, so
-- an outbox replay of a write whose reply was lost changes nothing.
-- KEYS: 1 gcra hash, 2 leases zset, 3 done marker, 4 claim hash, 5 ledger stream,
--       6 held hash (see acquire.lua), 7 live zset, 8 intents hash, 9.. use hashes
-- ARGV: 1 hold ("" none), 2 tpm, 3 tpm delta, 4 tokens, 5 nanos, 6 record ("" none),
--       7 settlement key, 8 claim? (1/0), 9 store? (1/0), 10 status, 11 stream (1/0), 12 body,
--       13 retention ms (a stored answer's life), 14 claim body hash, 15 rpm, 16 rpm delta,
--       17 replay window ms (the done marker's life: how late a replay may come and still
--       be applied once), 18 end the intent? (1/0), 19 ledger bound ("" none, MINID or
--       MAXLEN), 20 its value, 21.. ttl ms of each use hash (0: none), in KEYS order,
--       then (ARGV[13 + #KEYS]) the API endpoint whose usage it is ("" none): counted apart
--       as fields t:<endpoint> and n:<endpoint> of the same use hashes
local tokens, nanos = tonumber(ARGV[4]), tonumber(ARGV[5])
local endpoint = ARGV[13 + #KEYS]
-- The intent ends first, whatever follows: one whose settlement was applied already (by a
-- recoverer, or a write whose reply was lost) must not be recovered again and again.
if ARGV[18] == '1' then
  redis.call('ZREM', KEYS[7], ARGV[7])
  redis.call('HDEL', KEYS[8], ARGV[7], ARGV[7] .. ':t')
end
if ARGV[6] ~= '' or tokens ~= 0 or nanos ~= 0 then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[17]) then return 0 end
end
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local _, _, tok, nan = string.find(ARGV[1], '|(%-?%d+)|(%-?%d+)$')
  if tonumber(tok) ~= 0 then redis.call('HINCRBY', KEYS[6], 't', -tonumber(tok)) end
  if tonumber(nan) ~= 0 then redis.call('HINCRBY', KEYS[6], 'n', -tonumber(nan)) end
end
local now  -- Redis TIME in ms, read once and only if a window moves
local function reconcile(window, limit, delta)
  if limit <= 0 or delta == 0 then return end
  local tat = tonumber(redis.call('HGET', KEYS[1], window))
  if tat then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
    end
    -- As gcra.reconcile: a refund gives back at most what is still in the bucket.
    local new_tat = math.max(math.max(tat, now) + delta * 60000 / limit, now)
    redis.call('HSET', KEYS[1], window, string.format('%.3f', new_tat))
    -- A charge moves the TAT later: the hash must live past it, and never shorter than the
    -- other window needs (acquire's 2 periods). A refund moves it back to at most max(tat,
    -- now), which the hash's life already covers: no call for it.
    if delta > 0 then
      redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[1]), math.ceil(new_tat - now) + 120000))
    end
  end
end
reconcile('tpm', tonumber(ARGV[2]), tonumber(ARGV[3]))
reconcile('rpm', tonumber(ARGV[15]), tonumber(ARGV[16]))
if tokens ~= 0 or nanos ~= 0 then
  for i = 9, #KEYS do
    local t = redis.call('HINCRBY', KEYS[i], 't', tokens)
    local n = redis.call('HINCRBY', KEYS[i], 'n', nanos)
    if endpoint ~= '' then
      redis.call('HINCRBY', KEYS[i], 't:' .. endpoint, tokens)
      redis.call('HINCRBY', KEYS[i], 'n:' .. endpoint, nanos)
    end
    local ttl = tonumber(ARGV[12 + i])
    -- A counter just made holds exactly what was added: it gets its life here, once, from its
    -- period's first usage. An older one holding 0 and 0 before (usage only adds, so none
    -- should) would match too, and merely have its life renewed.
    if ttl > 0 and t == tokens and n == nanos then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
if ARGV[6] ~= '' then
  -- Bounded (state.ledger_retention): "~" lets Redis trim whole nodes, cheaply, when it can.
  if ARGV[19] ~= '' then
    redis.call('XADD', KEYS[5], ARGV[19], '~', ARGV[20], '*', 'r', ARGV[6])
  else
    redis.call('XADD', KEYS[5], '*', 'r', ARGV[6])
  end
end
if ARGV[8] == '1' then
  local c = redis.call('HMGET', KEYS[4], 'o', 's')
  -- Ours and still running, or gone (it expired while this settlement waited in an outbox).
  if (c[1] == ARGV[7] and not c[2]) or not c[1] then
    if ARGV[9] == '1' then
      if not c[1] then redis.call('HSET', KEYS[4], 'h', ARGV[14], 'o', ARGV[7]) end
      redis.call('HSET', KEYS[4], 's', ARGV[10], 'k', ARGV[11], 'b', ARGV[12])
      redis.call('PEXPIRE', KEYS[4], ARGV[13])
    elseif c[1] then
      redis.call('DEL', KEYS[4])
    end
  end
end
return 1
