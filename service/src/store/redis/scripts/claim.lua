-- KEYS: waiting, delayed, active. ARGV: prefix, workerId, leaseMs, leaseToken
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HSET', job_key(id), 'state', 'waiting')
  redis.call('RPUSH', KEYS[1], id)
end
while true do
  local id = redis.call('LPOP', KEYS[1])
  if not id then return false end
  if redis.call('EXISTS', job_key(id)) == 1 then
    local attempts = redis.call('HINCRBY', job_key(id), 'attempts', 1)
    redis.call('HSET', job_key(id), 'state', 'active', 'startedAt', fmt(now), 'lease', ARGV[4],
      'worker', ARGV[2])
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), id)
    append_event(id, '{"type":"active","at":' .. fmt(now) .. ',"attemptsMade":' .. attempts ..
      ',"worker":' .. cjson.encode(ARGV[2]) .. '}')
    return redis.call('HGETALL', job_key(id))
  end
end
