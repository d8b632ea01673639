-- kycq shared rate-limit bucket: GCRA with reservation, cool-down pause, bounded adaptive lowering.
-- The line-for-line mirror of src/ratelimit/gcra.rs (the unit-tested reference model).
--
-- KEYS[1]  the bucket: a hash {tat, share, share_at, paused_until}, times in microseconds of
--          Redis server time (TIME): no worker clock is ever used. One key per bucket.
-- ARGV[1]  "acquire" or "pause"
-- ARGV[2]  interval_us   emission interval at the configured rate
-- ARGV[3]  tau_us        burst tolerance, (burst - 1) * interval_us
-- ARGV[4]  acquire: max_wait_us; pause: cooldown_us
-- ARGV[5]  min_share     lowest share of the rate adaptive lowering goes to (1 = never lower)
-- ARGV[6]  recovery_us   time the share takes to climb from min_share back to 1
-- ARGV[7]  cooldown_us   (acquire and pause) one lowering per cool-down
--
-- acquire -> {1, wait_us, next_us, paused_us}  a slot is reserved; the caller sleeps wait_us,
--                                   then calls; the next free slot (anyone's) is next_us from
--                                   now; the bucket stays paused ("throttled") paused_us more
--         -> {0, excess_us, paused_us}  nothing reserved: the wait would exceed max_wait by
--                                   excess_us
-- pause   -> {cooldown_us, share_ppm}
--
-- Needs effect replication of scripts (the default since Redis 5), because it reads TIME.

local key = KEYS[1]
local op = ARGV[1]
local interval = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local arg = tonumber(ARGV[4])
local min_share = tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
local cooldown = tonumber(ARGV[7])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local s = redis.call('HMGET', key, 'tat', 'share', 'share_at', 'paused_until')
local tat = tonumber(s[1]) or now
if tat < now then tat = now end
local share_base = tonumber(s[2])
local share_at = tonumber(s[3])
local share = 1
if share_base then
  share = share_base + (1 - min_share) * math.max(now - share_at, 0) / recovery
  if share > 1 then share = 1 end
end

-- Integers as plain digits: Lua's default number formatting keeps only 14 significant digits.
local function int(x)
  return string.format('%.0f', x)
end

local function expire(new_tat, lowered, lowered_at)
  local horizon = new_tat
  if lowered then
    local left = ((1 - lowered) / math.max(1 - min_share, 1e-9)) * recovery
    horizon = math.max(horizon, lowered_at + math.ceil(left))
  end
  redis.call('PEXPIRE', key, int(math.floor(math.max(horizon - now, 0) / 1000) + 1000))
end

if op == 'acquire' then
  local wait = tat - tau - now
  if wait < 0 then wait = 0 end
  local paused = 0
  if tonumber(s[4]) then paused = math.max(tonumber(s[4]) - now, 0) end
  if wait > arg then
    return {0, wait - arg, paused}
  end
  local new_tat = tat + math.ceil(interval / share)
  redis.call('HSET', key, 'tat', int(new_tat))
  if share_base and share >= 1 then
    redis.call('HDEL', key, 'share', 'share_at')
    share_base = nil
  end
  if share_base then
    expire(new_tat, share_base, share_at)
  else
    expire(new_tat, nil, nil)
  end
  local next_free = new_tat - tau - now
  if next_free < 0 then next_free = 0 end
  return {1, wait, next_free, paused}
elseif op == 'pause' then
  local paused_until = now + arg
  local new_tat = math.max(tat, paused_until + tau)
  local old_pause = tonumber(s[4])
  if old_pause and old_pause > paused_until then paused_until = old_pause end
  redis.call('HSET', key, 'tat', int(new_tat), 'paused_until', int(paused_until))
  local recently = share_base and (now - share_at < cooldown)
  if min_share < 1 and not recently then
    share = math.max(share * 0.75, min_share)
    share_base = share
    share_at = now
    redis.call('HSET', key, 'share', tostring(share), 'share_at', int(now))
  end
  if share_base then
    expire(new_tat, share_base, share_at)
  else
    expire(new_tat, nil, nil)
  end
  return {arg, math.floor(share * 1000000)}
else
  return redis.error_reply('kycq bucket: unknown op ' .. tostring(op))
end
