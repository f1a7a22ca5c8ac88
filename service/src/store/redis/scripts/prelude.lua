-- Shared helpers, loaded into every script after the generated tables `K` (the script's KEYS
-- by role, see `scripts.rs`) and `A` (its ARGV by name). Every key belongs to the pipeline's
-- hash tag; per-job keys are derived from the declared `K.job_prefix` where a script picks jobs
-- itself, as BullMQ's scripts do.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n) return string.format('%d', n) end

local function num(v) return tonumber(v) or 0 end

-- Appends an event to a job's history and the pipeline's stream. `body` is the event text
-- rendered by Rust (`events::render`); the store puts `seq`, `jobId` and its own counters in
-- front, like `events::numbered`. Job ids are validated, so they need no escaping.
local function append_event(job_key, id, kind, body, counters)
  local seq = redis.call('HINCRBY', job_key, 'eventSeq', 1)
  local head = '{"seq":' .. seq .. ',"jobId":"' .. id .. '"'
  if counters then
    for i = 1, #counters, 2 do
      head = head .. ',"' .. counters[i] .. '":' .. fmt(counters[i + 1])
    end
  end
  local event = head .. ',' .. string.sub(body, 2)
  redis.call('RPUSH', job_key .. ':events', event)
  redis.call('XADD', K.events, 'MAXLEN', '~', 10000, '*', 'job', id, 'seq', seq, 'type', kind,
    'data', event)
  return seq
end

local function holds_lease(job_key, token)
  local f = redis.call('HMGET', job_key, 'state', 'lease')
  return f[1] == 'active' and f[2] == token
end

local function count_outcome(outcome)
  redis.call('HINCRBY', K.outcomes, outcome, 1)
  redis.call('EXPIRE', K.outcomes, 7200)
end

-- Spend hashes live for a little over a year, so last year's months can still be read.
local SPEND_TTL = 34560000

-- Moves `amount` micro-dollars out of a spend hash's reservations, never below zero.
local function unreserve(spend_key, amount)
  if amount <= 0 then return end
  local held = num(redis.call('HGET', spend_key, 'reservedMicros'))
  redis.call('HSET', spend_key, 'reservedMicros', fmt(math.max(0, held - amount)))
end
