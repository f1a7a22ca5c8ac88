-- Shared helpers, prepended to every script. ARGV[1] is always the pipeline key prefix
-- (`fc:{<pipeline>}:`); per-job keys are derived from it, so every key shares one hash tag.
local prefix = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function job_key(id) return prefix .. 'job:' .. id end
-- Appends an event (a JSON object text without `seq`) to the job's history and the stream.
local function append_event(id, body)
  local seq = redis.call('HINCRBY', job_key(id), 'eventSeq', 1)
  local event = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
  redis.call('RPUSH', job_key(id) .. ':events', event)
  redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', 10000, '*', 'job', id, 'event', event)
  return seq
end
local function holds_lease(id, token)
  local fields = redis.call('HMGET', job_key(id), 'state', 'lease')
  return fields[1] == 'active' and fields[2] == token
end
local function count_outcome(now, outcome)
  local key = prefix .. 'outcomes:' .. math.floor(now / 60000)
  redis.call('HINCRBY', key, outcome, 1)
  redis.call('EXPIRE', key, 7200)
end
local function fmt(n) return string.format('%d', n) end
