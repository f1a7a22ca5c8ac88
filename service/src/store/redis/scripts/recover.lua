-- KEYS: active, waiting, failed, wake. ARGV: prefix, maxStalls
local now = now_ms()
local max = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
local requeued, failed = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', job_key(id)) == 1 then
    local stalls = redis.call('HINCRBY', job_key(id), 'stalls', 1)
    redis.call('HDEL', job_key(id), 'lease')
    if stalls > max then
      local err = 'job stalled more than allowable limit (' .. max .. ')'
      local attempts = redis.call('HGET', job_key(id), 'attempts')
      redis.call('HSET', job_key(id), 'state', 'failed', 'finishedAt', fmt(now), 'error', err)
      redis.call('ZADD', KEYS[3], now, id)
      count_outcome(now, 'failed')
      append_event(id, '{"type":"failed","at":' .. fmt(now) .. ',"error":' .. cjson.encode(err) ..
        ',"attemptsMade":' .. attempts .. ',"duration":0}')
      failed = failed + 1
    else
      redis.call('HSET', job_key(id), 'state', 'waiting')
      redis.call('RPUSH', KEYS[2], id)
      redis.call('RPUSH', KEYS[4], '1')
      append_event(id, '{"type":"waiting","at":' .. fmt(now) .. ',"reason":"stalled","stalls":' ..
        stalls .. '}')
      requeued = requeued + 1
    end
  end
end
return {requeued, failed}
