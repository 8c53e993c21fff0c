-- acquire: check every limit of one scope and, only if all pass, reserve them all.
-- The memory store (state/memory.py) and GCRA (state/gcra.py) do the same; keep them in step.
-- KEYS: 1 gcra hash, 2 leases zset, 3 use hash of the allowance period, 4 idempotency claim hash,
--       5 held hash: the tokens (t) and nanos (n) the leases in 2 reserve, kept in step with 2
--       by every script that adds or removes a lease (summing 2 here was O(requests in flight):
--       200 us a call at 500 in flight, which made Redis the bottleneck),
--       6 intents hash (settlement key -> intent), 7 live zset (settlement key -> lease end)
-- ARGV: 1 rpm, 2 tpm, 3 concurrency, 4 tokens, 5 allowance tokens (-1 none), 6 allowance nanos
--       (-1 none), 7 hold ("" none), 8 lease ttl ms, 9 claim? (1/0), 10 body hash, 11 owner,
--       12 concurrency retry ms, 13 on_exceed ("" a key's quota, "refuse" or "cap": a budget),
--       14 cost nanos, 15 prompt tokens, 16 n, 17 price input, 18 price output (per million),
--       19 intent ("" none), 20 settlement key, 21 deadline (Redis time, ms; 0 none)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local PERIOD = 60000
local EPSILON = 0.001  -- a microsecond, as in gcra.py

-- The caller has stopped waiting: taking anything now would hold it for nobody (a claim
-- would answer its retry with 409 until it expired).
local deadline = tonumber(ARGV[21])
if deadline > 0 and now > deadline then return {'late'} end

if ARGV[9] == '1' then
  local c = redis.call('HMGET', KEYS[4], 'h', 'o', 's', 'k', 'b')
  if c[1] then
    if c[1] ~= ARGV[10] then return {'reused'} end
    if c[3] then return {'replay', c[2], c[3], c[4], c[5]} end
    return {'conflict', redis.call('PTTL', KEYS[4])}
  end
end

local function amounts(hold)
  local _, _, tok, nan = string.find(hold, '|(%-?%d+)|(%-?%d+)$')
  return tonumber(tok), tonumber(nan)
end

-- Leases whose replica never settled them (it died) give their slot and reservation back.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  local dt, dn = 0, 0
  for _, m in ipairs(expired) do
    local tok, nan = amounts(m)
    dt, dn = dt + tok, dn + nan
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if dt ~= 0 then redis.call('HINCRBY', KEYS[5], 't', -dt) end
  if dn ~= 0 then redis.call('HINCRBY', KEYS[5], 'n', -dn) end
end

local tokens, hold, capped = tonumber(ARGV[4]), ARGV[7], 0
local at, an = tonumber(ARGV[5]), tonumber(ARGV[6])
if at >= 0 or an >= 0 then
  local held = redis.call('HMGET', KEYS[5], 't', 'n')
  local held_t, held_n = tonumber(held[1]) or 0, tonumber(held[2]) or 0
  local used = redis.call('HMGET', KEYS[3], 't', 'n')
  local used_t, used_n = tonumber(used[1]) or 0, tonumber(used[2]) or 0
  if (at >= 0 and used_t >= at) or (an >= 0 and used_n >= an) then
    return {'spent', 0, 0}
  end
  local reserved = {'limited', 'reserved', tonumber(ARGV[12]), -1, 0, -1, 0}
  local mode = ARGV[13]
  if mode == '' then
    -- A key's quota: admitted while anything is left beside the requests in flight.
    if (at >= 0 and used_t + held_t >= at) or (an >= 0 and used_n + held_n >= an) then
      return reserved
    end
  else
    -- A budget, as memory.py's _budget: a request that needs more than is left is refused
    -- (or capped to fit); one that fits only once requests in flight finish waits for them.
    local need_t, need_n = at >= 0 and tokens or 0, tonumber(ARGV[14])
    local function over(nt, nn)
      if at >= 0 and nt > at - used_t then return {'spent', nt, at - used_t} end
      if an >= 0 and nn > an - used_n then return {'spent', nn, an - used_n} end
      return nil
    end
    local refusal = over(need_t, need_n)
    if not refusal then
      if (at >= 0 and used_t + held_t + need_t > at) or (an >= 0 and used_n + held_n + need_n > an) then
        return reserved
      end
    elseif mode ~= 'cap' then
      return refusal
    else
      -- The most completion tokens per choice that fit what is left beside what is held.
      local prompt, n = tonumber(ARGV[15]), tonumber(ARGV[16])
      local pin, pout = tonumber(ARGV[17]), tonumber(ARGV[18])
      local function cost(c) return math.ceil(prompt * pin * 1000 + c * n * pout * 1000) end
      local room_t, room_n = at - used_t - held_t, an - used_n - held_n
      local c = math.floor((tokens - prompt) / n)
      if at >= 0 then c = math.min(c, math.floor((room_t - prompt) / n)) end
      if an >= 0 and pout > 0 then
        local most = c  -- then the float estimate, made exact: the most whose cost fits
        c = math.min(c, math.floor((room_n - prompt * pin * 1000) / (n * pout * 1000)))
        while c < most and cost(c + 1) <= room_n do c = c + 1 end
        while c >= 1 and cost(c) > room_n do c = c - 1 end
      end
      if c >= 1 and ((at >= 0 and prompt + c * n > room_t) or (an >= 0 and cost(c) > room_n)) then c = 0 end
      if c < 1 then return over(prompt + n, cost(1)) or reserved end
      capped, tokens = c, prompt + c * n
      if hold ~= '' then
        local lease = string.match(hold, '^(.*)|%-?%d+|%-?%d+$')
        hold = string.format('%s|%d|%d', lease, at >= 0 and tokens or 0, an >= 0 and cost(c) or 0)
      end
    end
  end
end

local function gcra(tat, limit, cost)
  local interval = PERIOD / limit
  local start = math.max(tat or now, now)
  local new_tat = start + cost * interval
  local function remaining(at) return math.max(0, math.floor((PERIOD - (at - now) + EPSILON) / interval)) end
  if new_tat - now <= PERIOD + EPSILON then
    return true, new_tat, remaining(new_tat), new_tat - now, 0
  end
  return false, start, remaining(start), start - now, new_tat - now - PERIOD
end

local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tats = redis.call('HMGET', KEYS[1], 'rpm', 'tpm')
local r_ok, r_tat, r_rem, r_reset, r_retry = true, nil, -1, 0, 0
local t_ok, t_tat, t_rem, t_reset, t_retry = true, nil, -1, 0, 0
local cost = 0
if rpm > 0 then r_ok, r_tat, r_rem, r_reset, r_retry = gcra(tonumber(tats[1]), rpm, 1) end
if tpm > 0 then
  cost = math.min(tokens, tpm)
  t_ok, t_tat, t_rem, t_reset, t_retry = gcra(tonumber(tats[2]), tpm, cost)
end
local window = {r_rem, math.floor(r_reset), t_rem, math.floor(t_reset)}

local concurrency = tonumber(ARGV[3])
if concurrency > 0 and redis.call('ZCARD', KEYS[2]) >= concurrency then
  return {'limited', 'concurrency', tonumber(ARGV[12]), unpack(window)}
end
if not r_ok then return {'limited', 'rpm', math.ceil(r_retry), unpack(window)} end
if not t_ok then return {'limited', 'tpm', math.ceil(t_retry), unpack(window)} end

-- One HSET for both windows: each call from a script costs Redis about a microsecond.
local moved = {}
if rpm > 0 then moved[#moved + 1] = 'rpm'; moved[#moved + 1] = string.format('%.3f', r_tat) end
if tpm > 0 then moved[#moved + 1] = 'tpm'; moved[#moved + 1] = string.format('%.3f', t_tat) end
if #moved > 0 then
  redis.call('HSET', KEYS[1], unpack(moved))
  redis.call('PEXPIRE', KEYS[1], 2 * PERIOD)  -- both new TATs are at most a period ahead
end
local ttl = tonumber(ARGV[8])
if hold ~= '' then
  -- No key TTL on 2 or 5: a lease leaves 2 only through these scripts, which keep 5 in step.
  redis.call('ZADD', KEYS[2], now + ttl, hold)
  local tok, nan = amounts(hold)
  if tok ~= 0 then redis.call('HINCRBY', KEYS[5], 't', tok) end
  if nan ~= 0 then redis.call('HINCRBY', KEYS[5], 'n', nan) end
end
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[4], 'h', ARGV[10], 'o', ARGV[11])
  redis.call('PEXPIRE', KEYS[4], ttl)
end
if ARGV[19] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[20], ARGV[19])
  redis.call('ZADD', KEYS[7], now + ttl, ARGV[20])
end
if capped > 0 then return {'granted', cost, window[1], window[2], window[3], window[4], capped, hold} end
return {'granted', cost, unpack(window)}
