-- Shared helpers, loaded into every script after the generated tables `K` (the script's KEYS
-- by role, see `scripts.rs`) and `A` (its ARGV by name). Every key belongs to the pipeline's
-- hash tag. Every key whose name the caller knows is declared; per-job keys are derived from
-- the declared `K.job_prefix` only where a script picks jobs itself (claim, recover, trim), as
-- BullMQ's scripts do.

-- The server's time, read once per script run.
local NOW_MS
local function now_ms()
  if not NOW_MS then
    local t = redis.call('TIME')
    NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW_MS
end

local function fmt(n) return string.format('%d', n) end

local function num(v) return tonumber(v) or 0 end

-- The text of a numbered event: `body` is the event rendered by Rust (`events::render`); the
-- store puts `seq`, `jobId` and its own counters in front, like `events::numbered`. Job ids are
-- validated, so they need no escaping.
local function event_text(seq, id, body, counters)
  local head = '{"seq":' .. seq .. ',"jobId":"' .. id .. '"'
  if counters then
    for i = 1, #counters, 2 do
      head = head .. ',"' .. counters[i] .. '":' .. fmt(counters[i + 1])
    end
  end
  return head .. ',' .. string.sub(body, 2)
end

-- The pipeline's stream is a live feed, not a record (each job's history is): it keeps at most
-- this many entries, and `trim` drops entries older than STREAM_MAX_AGE_MS.
local STREAM_MAX_ENTRIES = 10000
local STREAM_MAX_AGE_MS = 600000

-- Appends events (each {kind, text, seq}) to a job's history in one push, and their numbers
-- to the pipeline's stream (the text lives once, in the history; feed readers fetch it for the
-- jobs they follow). The caller has numbered them and stored the new `eventSeq`. `events_key`
-- is the history's declared key where the caller names the job (`K.job_events`); scripts that
-- pick jobs themselves derive it from the job's key.
local function push_events(job_key, id, events, events_key)
  local texts = {}
  for i = 1, #events do texts[i] = events[i][2] end
  redis.call('RPUSH', events_key or (job_key .. ':events'), unpack(texts))
  for i = 1, #events do
    redis.call('XADD', K.events, 'MAXLEN', '~', STREAM_MAX_ENTRIES, '*', 'job', id, 'seq',
      events[i][3], 'type', events[i][1])
  end
end

-- Appends one event, numbering it from the job's `eventSeq`.
local function append_event(job_key, id, kind, body, counters, events_key)
  local seq = redis.call('HINCRBY', job_key, 'eventSeq', 1)
  push_events(job_key, id, {{kind, event_text(seq, id, body, counters), seq}}, events_key)
  return seq
end

local function holds_lease(job_key, token)
  local f = redis.call('HMGET', job_key, 'state', 'lease')
  return f[1] == 'active' and f[2] == token
end

local function count_outcome(outcome)
  -- The first count of a minute bucket sets its expiry (there are two counters per bucket).
  if redis.call('HINCRBY', K.outcomes, outcome, 1) == 1 then
    redis.call('EXPIRE', K.outcomes, 7200)
  end
end

-- Spend hashes live for a little over a year, so last year's months can still be read.
local SPEND_TTL = 34560000

-- Moves `amount` micro-dollars out of a spend hash's reservations, never below zero.
local function unreserve(spend_key, amount)
  if amount <= 0 then return end
  local held = num(redis.call('HGET', spend_key, 'reservedMicros'))
  redis.call('HSET', spend_key, 'reservedMicros', fmt(math.max(0, held - amount)))
end
