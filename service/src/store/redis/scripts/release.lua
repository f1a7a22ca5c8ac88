-- KEYS: active, waiting, wake. ARGV: prefix, id, token
local id = ARGV[2]
if not holds_lease(id, ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', job_key(id), 'state', 'waiting')
redis.call('HINCRBY', job_key(id), 'attempts', -1)
redis.call('HDEL', job_key(id), 'lease')
redis.call('LPUSH', KEYS[2], id)
redis.call('RPUSH', KEYS[3], '1')
append_event(id, '{"type":"waiting","at":' .. fmt(now_ms()) .. ',"reason":"released"}')
return 1
