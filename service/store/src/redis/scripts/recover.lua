-- Requeues active jobs whose lease expired and releases their reservations (whatever period
-- they were taken in); fails jobs that stalled more than A.max_stalls times.
local now = now_ms()
local max = num(A.max_stalls)
local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, 1000)
local requeued, failed = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', K.active, id)
  local job_key = K.job_prefix .. id
  local f = redis.call('HMGET', job_key, 'state', 'reserved', 'reservedPeriod', 'attempts',
    'client')
  if f[1] == 'active' then
    active_ended(f[5])
    if f[3] then unreserve(K.spend_prefix .. f[3], num(f[2])) end
    redis.call('HDEL', job_key, 'lease', 'reserved', 'reservedPeriod')
    local stalls = redis.call('HINCRBY', job_key, 'stalls', 1)
    if stalls > max then
      redis.call('HSET', job_key, 'state', 'failed', 'finishedAt', fmt(now), 'error', A.stalled_error,
        'errorCode', A.stalled_code)
      redis.call('ZADD', K.failed, now, id)
      count_outcome('failed')
      append_event(job_key, id, 'failed', A.failed_body, {'attemptsMade', num(f[4])})
      failed = failed + 1
    else
      redis.call('HSET', job_key, 'state', 'waiting')
      enqueue(id, f[5])
      append_event(job_key, id, 'waiting', A.waiting_body, {'stalls', stalls})
      requeued = requeued + 1
    end
  end
end
if requeued + failed > 0 then
  redis.call('RPUSH', K.wake, '1')
  redis.call('LTRIM', K.wake, -64, -1)
end
return {requeued, failed}
