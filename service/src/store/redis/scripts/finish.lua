-- Ends one attempt, settles its cost against its reservation, then claims the next jobs.
-- A.outcome: completed | retry | failed | release. A.body is the rendered event of the outcome
-- (`retrying` for retry); A.exhausted_body the `failed` event used when a retry has no attempt
-- left. The cost is counted even when the lease was lost: spend is never hidden.
local id = A.id
local now = now_ms()
local function spend_reply()
  local sp = redis.call('HMGET', K.spend_lease, 'spentMicros', 'reservedMicros', 'inputTokens',
    'outputTokens', 'jobs', 'overrunMicros', 'restoredMicros')
  return {num(sp[1]), num(sp[2]), num(sp[3]), num(sp[4]), num(sp[5]), num(sp[6]), num(sp[7])}
end

-- A repeated finish of the same attempt (its first reply was lost) changes nothing.
local state_now = redis.call('HMGET', K.job, 'settled', 'state')
if state_now[1] == A.lease_token then
  return {'duplicate:' .. (state_now[2] or ''), spend_reply(), 0, 0, claim_jobs()}
end
local held = holds_lease(K.job, A.lease_token)
if state_now[2] then redis.call('HSET', K.job, 'settled', A.lease_token) end

-- Settle.
local reserved = 0
if held then
  reserved = num(redis.call('HGET', K.job, 'reserved'))
  unreserve(K.spend_lease, reserved)
end
local cost = num(A.cost)
local overrun = 0
if A.called == '1' or cost > 0 then
  redis.call('HINCRBY', K.spend_lease, 'spentMicros', cost)
  redis.call('HINCRBY', K.spend_lease, 'inputTokens', num(A.input_tokens))
  redis.call('HINCRBY', K.spend_lease, 'outputTokens', num(A.output_tokens))
  redis.call('HINCRBY', K.spend_lease, 'jobs', 1)
  if held and cost > reserved then
    overrun = cost - reserved
    redis.call('HINCRBY', K.spend_lease, 'overrunMicros', overrun)
  end
  redis.call('EXPIRE', K.spend_lease, SPEND_TTL)
end
local budget = budget_in_force()
local stopped = 0
if budget.spend_key == K.spend_lease then
  stopped = review_stop(budget, num(redis.call('HGET', K.spend_lease, 'spentMicros')))
end

-- Record the outcome.
local outcome = 'lost'
if held then
  redis.call('ZREM', K.active, id)
  redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod')
  local kind = A.outcome
  if kind == 'retry' then
    local f = redis.call('HMGET', K.job, 'attempts', 'maxAttempts')
    if num(f[1]) < num(f[2]) then
      redis.call('HSET', K.job, 'state', 'delayed', 'error', A.error)
      redis.call('ZADD', K.delayed, now + num(A.delay_ms), id)
      append_event(K.job, id, 'retrying', A.body, {'attemptsMade', num(f[1])})
      outcome = 'retrying'
    else
      kind = 'failed'
      A.body = A.exhausted_body
    end
  end
  if kind == 'completed' then
    redis.call('HSET', K.job, 'state', 'completed', 'finishedAt', fmt(now), 'result', A.result)
    redis.call('HDEL', K.job, 'error', 'errorCode')
    redis.call('ZADD', K.completed, now, id)
    count_outcome('completed')
    append_event(K.job, id, 'completed', A.body)
    outcome = 'completed'
  elseif kind == 'failed' then
    redis.call('HSET', K.job, 'state', 'failed', 'finishedAt', fmt(now), 'error', A.error)
    if A.error_code ~= '' then redis.call('HSET', K.job, 'errorCode', A.error_code) end
    redis.call('ZADD', K.failed, now, id)
    count_outcome('failed')
    local attempts = num(redis.call('HGET', K.job, 'attempts'))
    append_event(K.job, id, 'failed', A.body, {'attemptsMade', attempts})
    outcome = 'failed'
  elseif kind == 'release' then
    redis.call('HSET', K.job, 'state', 'waiting')
    redis.call('HINCRBY', K.job, 'attempts', -1)
    redis.call('LPUSH', K.waiting, id)
    append_event(K.job, id, 'waiting', A.body)
    outcome = 'released'
  end
  -- A job waiting for budget may fit now: wake the workers.
  local head = redis.call('LINDEX', K.waiting, 0)
  if kind == 'release' or (reserved > 0 and head and
      redis.call('HGET', K.job_prefix .. head, 'budgetWait') == '1') then
    redis.call('RPUSH', K.wake, '1')
    redis.call('LTRIM', K.wake, -64, -1)
  end
end

return {outcome, spend_reply(), overrun, stopped, claim_jobs()}
