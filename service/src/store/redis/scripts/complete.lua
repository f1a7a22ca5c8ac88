-- KEYS: active, completed. ARGV: prefix, id, token, resultJson, eventJson
local id = ARGV[2]
if not holds_lease(id, ARGV[3]) then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', job_key(id), 'state', 'completed', 'finishedAt', fmt(now), 'result', ARGV[4])
redis.call('HDEL', job_key(id), 'lease', 'error')
redis.call('ZADD', KEYS[2], now, id)
count_outcome(now, 'completed')
append_event(id, ARGV[5])
return 1
