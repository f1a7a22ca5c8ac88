-- Cancels one job that has not finished. A.owner: the owner the caller must be ('' for an
-- admin). A waiting job leaves the queue, a delayed one its schedule; an active one loses its
-- lease and its reservation (its worker aborts the call at the next renewal, and the finish it
-- then sends counts the call's cost without a lease, as for any lost lease).
-- Replies: {'missing'} | {'cancelled', previous state} | {'repeat'} | {'finished', state}
local id = A.id
local f = redis.call('HMGET', K.job, 'state', 'owner', 'reserved', 'reservedPeriod', 'attempts',
  'client')
if not f[1] or (A.owner ~= '' and f[2] ~= A.owner) then return {'missing'} end
local was = f[1]
if was == 'cancelled' then return {'repeat'} end
if was == 'completed' or was == 'failed' then return {'finished', was} end
local now = now_ms()
if was == 'waiting' then
  dequeue(id, f[6])
elseif was == 'delayed' then
  redis.call('ZREM', K.delayed, id)
elseif was == 'active' then
  redis.call('ZREM', K.active, id)
  if active_ended(f[6]) then
    -- A client held at its cap may run again, and every worker may be idle.
    redis.call('RPUSH', K.wake, '1')
    redis.call('LTRIM', K.wake, -64, -1)
  end
  if f[4] then unreserve(K.spend_prefix .. f[4], num(f[3])) end
  redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod')
end
redis.call('HSET', K.job, 'state', 'cancelled', 'finishedAt', fmt(now), 'cancelledBy', A.by)
redis.call('HDEL', K.job, 'budgetWait')
redis.call('ZADD', K.cancelled, now, id)
append_event(K.job, id, 'cancelled', A.body, {'attemptsMade', num(f[5])}, K.job_events)
return {'cancelled', was}
