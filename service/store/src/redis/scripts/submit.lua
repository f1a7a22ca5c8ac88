-- Admits and enqueues one job in one round trip: idempotent replay first (before admission
-- and rate limiting, so a retry of an accepted request never gets 429), then the kill-switch
-- and the budget, then the rate limit, then the job.
-- Replies: {'accepted', id} | {'replayed', id, state} | {'reused', id}
--        | {'refused', setBy} | {'limited', retryAfterMs}
local id = A.job_id

-- A client that re-sends this call after a lost reply (redis-rs does on a cluster) must not
-- enqueue the job twice or reset it.
if redis.call('EXISTS', K.job) == 1 then return {'accepted', id} end

if A.fingerprint ~= '' then
  local existing = redis.call('GET', K.idem)
  if existing then
    local f = redis.call('HMGET', K.job_prefix .. existing, 'state', 'fingerprint')
    if f[1] then
      if f[2] == A.fingerprint then return {'replayed', existing, f[1]} end
      return {'reused', existing}
    end
  end
end

local budget = budget_in_force()
local spent = 0
if budget.enforced > 0 then spent = num(redis.call('HGET', budget.spend_key, 'spentMicros')) end
local ks = read_switch()
if ks[1] == 'true' then
  if stop_lapsed(ks, budget, spent) then
    clear_switch('budget')
  else
    return {'refused', ks[2] or 'admin'}
  end
end
if budget.enforced > 0 and spent >= budget.enforced then
  set_budget_stop(budget, spent)
  return {'refused', 'budget'}
end

if num(A.rate_max) > 0 then
  local count = redis.call('INCR', K.rate)
  if count == 1 then redis.call('PEXPIRE', K.rate, A.rate_window_ms) end
  if count > num(A.rate_max) then return {'limited', redis.call('PTTL', K.rate)} end
end

local fields = {'id', id, 'state', 'waiting', 'request', A.request, 'owner', A.owner,
  'client', A.client, 'attempts', 0,
  'maxAttempts', A.max_attempts, 'stalls', 0, 'createdAt', fmt(now_ms()), 'eventSeq', 0,
  'inputBytes', A.input_bytes, 'cardCount', A.card_count}
if A.traceparent ~= '' then
  fields[#fields + 1] = 'traceparent'
  fields[#fields + 1] = A.traceparent
end
if A.fingerprint ~= '' then
  fields[#fields + 1] = 'idem'
  fields[#fields + 1] = A.idem_digest
  fields[#fields + 1] = 'fingerprint'
  fields[#fields + 1] = A.fingerprint
  redis.call('SET', K.idem, id, 'EX', A.idem_ttl)
end
redis.call('HSET', K.job, unpack(fields))
if enqueue(id, A.client, false, K.client_queue) then
  -- No work was ready: idle workers may be asleep (busy ones claim the next job as they
  -- finish one, and a full claim wakes another worker), and the operator may have scaled to
  -- zero: wake both.
  redis.call('RPUSH', K.wake, '1')
  redis.call('LTRIM', K.wake, -64, -1)
  redis.call('XADD', K.signals, 'MAXLEN', '~', 100, '*', 'job', id)
end
return {'accepted', id}
