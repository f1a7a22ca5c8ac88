-- KEYS: waiting, wake. ARGV: prefix, id, request, maxAttempts, idempotencyKey ('' = none), idemTtlSeconds
local id, key = ARGV[2], ARGV[5]
if key ~= '' then
  local existing = redis.call('GET', prefix .. 'idem:' .. key)
  if existing and redis.call('EXISTS', job_key(existing)) == 1 then
    return {0, existing}
  end
end
local now = now_ms()
redis.call('HSET', job_key(id), 'id', id, 'state', 'waiting', 'request', ARGV[3], 'attempts', 0,
  'maxAttempts', ARGV[4], 'stalls', 0, 'createdAt', fmt(now), 'eventSeq', 0)
if key ~= '' then
  redis.call('HSET', job_key(id), 'idempotencyKey', key)
  redis.call('SET', prefix .. 'idem:' .. key, id, 'EX', ARGV[6])
end
redis.call('RPUSH', KEYS[1], id)
redis.call('RPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], -64, -1)
return {1, id}
