-- KEYS: active, delayed, failed. ARGV: prefix, id, token, error, retryDelayMs (-1 = permanent), durationMs
local id = ARGV[2]
if not holds_lease(id, ARGV[3]) then return 'lost' end
local now = now_ms()
local fields = redis.call('HMGET', job_key(id), 'attempts', 'maxAttempts')
local attempts, max = tonumber(fields[1]), tonumber(fields[2])
local delay = tonumber(ARGV[5])
local err = cjson.encode(ARGV[4])
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', job_key(id), 'error', ARGV[4])
redis.call('HDEL', job_key(id), 'lease')
if delay >= 0 and attempts < max then
  redis.call('HSET', job_key(id), 'state', 'delayed')
  redis.call('ZADD', KEYS[2], now + delay, id)
  append_event(id, '{"type":"retrying","at":' .. fmt(now) .. ',"error":' .. err .. ',"attemptsMade":' ..
    attempts .. ',"duration":' .. ARGV[6] .. ',"delayMs":' .. fmt(delay) .. '}')
  return 'retrying'
end
redis.call('HSET', job_key(id), 'state', 'failed', 'finishedAt', fmt(now))
redis.call('ZADD', KEYS[3], now, id)
count_outcome(now, 'failed')
append_event(id, '{"type":"failed","at":' .. fmt(now) .. ',"error":' .. err .. ',"attemptsMade":' ..
  attempts .. ',"duration":' .. ARGV[6] .. '}')
return 'failed'
