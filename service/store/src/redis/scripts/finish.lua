-- Ends one attempt, settles its cost against its reservation, then claims the next jobs.
-- A.outcome: completed | retry | failed | release. A.body is the rendered event of the outcome
-- (`retrying` for retry; `completed` without its result, which is stored once, in the job's
-- hash, and put back by the readers of the history); A.exhausted_body is the `failed` event used when a
-- retry has no attempt left. The cost is counted even when the lease was lost: spend is never
-- hidden. A repeat of the same attempt's finish (its first reply was lost) changes nothing.
local id = A.id
local now = now_ms()
local f = redis.call('HMGET', K.job, 'settled', 'state', 'lease', 'reserved', 'attempts',
  'maxAttempts', 'eventSeq', 'client')
local budget = budget_in_force()
if f[1] == A.lease_token then
  return {'duplicate:' .. (f[2] or ''), 0, 0, 0, claim_jobs(budget)}
end
local held = f[2] == 'active' and f[3] == A.lease_token

-- Settle.
local reserved = 0
if held then
  reserved = num(f[4])
  unreserve(K.spend_lease, reserved)
end
local cost = num(A.cost)
local overrun = 0
local spent = 0
if A.called == '1' or cost > 0 then
  if cost > 0 then spent = redis.call('HINCRBY', K.spend_lease, 'spentMicros', cost) end
  local tokens_in, tokens_out = num(A.input_tokens), num(A.output_tokens)
  if tokens_in > 0 then redis.call('HINCRBY', K.spend_lease, 'inputTokens', tokens_in) end
  if tokens_out > 0 then redis.call('HINCRBY', K.spend_lease, 'outputTokens', tokens_out) end
  -- The hash's expiry is set with its first settled call (or its first reservation).
  if redis.call('HINCRBY', K.spend_lease, 'jobs', 1) == 1 then
    redis.call('EXPIRE', K.spend_lease, SPEND_TTL)
  end
  if held and cost > reserved then
    overrun = cost - reserved
    redis.call('HINCRBY', K.spend_lease, 'overrunMicros', overrun)
  end
  if A.at_bound == '1' then
    redis.call('HINCRBY', K.spend_lease, 'boundCalls', 1)
    if cost > 0 then redis.call('HINCRBY', K.spend_lease, 'boundMicros', cost) end
  end
end
local stopped = 0
if budget.enforced > 0 and budget.spend_key == K.spend_lease then
  if cost == 0 then spent = num(redis.call('HGET', K.spend_lease, 'spentMicros')) end
  stopped = review_stop(budget, spent)
end

-- Record the outcome.
local outcome = 'lost'
if f[2] then
  -- Settled: a repeated call of this attempt finds its token and changes nothing.
  redis.call('HSET', K.job, 'settled', A.lease_token)
end
if held then
  redis.call('ZREM', K.active, id)
  -- A client held at its cap takes its turn again (if that made work ready, wake the workers:
  -- this call may claim nothing, e.g. from a draining worker).
  local wake = active_ended(f[8])
  local seq = num(f[7]) + 1
  local attempts = num(f[5])
  local kind = A.outcome
  local body = A.body
  if kind == 'retry' and attempts >= num(f[6]) then
    kind = 'failed'
    body = A.exhausted_body
  end
  if kind == 'retry' then
    redis.call('HSET', K.job, 'state', 'delayed', 'error', A.error, 'eventSeq', seq)
    redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod')
    redis.call('ZADD', K.delayed, now + num(A.delay_ms), id)
    push_events(K.job, id, {{'retrying', event_text(seq, id, body, {'attemptsMade', attempts}), seq}}, K.job_events)
    outcome = 'retrying'
  elseif kind == 'completed' then
    redis.call('HSET', K.job, 'state', 'completed', 'finishedAt', fmt(now), 'result', A.result,
      'eventSeq', seq)
    redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod', 'error', 'errorCode')
    redis.call('ZADD', K.completed, now, id)
    count_outcome('completed')
    -- The result lives once, in the job's hash; readers of the history append it.
    push_events(K.job, id, {{'completed', event_text(seq, id, body), seq}}, K.job_events)
    outcome = 'completed'
  elseif kind == 'failed' then
    if A.error_code ~= '' then
      redis.call('HSET', K.job, 'state', 'failed', 'finishedAt', fmt(now), 'error', A.error,
        'errorCode', A.error_code, 'eventSeq', seq)
    else
      redis.call('HSET', K.job, 'state', 'failed', 'finishedAt', fmt(now), 'error', A.error,
        'eventSeq', seq)
    end
    redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod')
    redis.call('ZADD', K.failed, now, id)
    count_outcome('failed')
    push_events(K.job, id, {{'failed', event_text(seq, id, body, {'attemptsMade', attempts}), seq}}, K.job_events)
    outcome = 'failed'
  elseif kind == 'release' then
    redis.call('HSET', K.job, 'state', 'waiting', 'attempts', math.max(0, attempts - 1),
      'eventSeq', seq)
    redis.call('HDEL', K.job, 'lease', 'reserved', 'reservedPeriod')
    enqueue(id, f[8], true)
    push_events(K.job, id, {{'waiting', event_text(seq, id, body), seq}}, K.job_events)
    outcome = 'released'
  end
  -- A job given back, or one waiting for budget that may fit now: wake the workers.
  wake = wake or kind == 'release'
  if not wake and reserved > 0 then
    local head = first_waiting()
    wake = head and redis.call('HGET', K.job_prefix .. head, 'budgetWait') == '1'
  end
  if wake then
    redis.call('RPUSH', K.wake, '1')
    redis.call('LTRIM', K.wake, -64, -1)
  end
end

return {outcome, spent, overrun, stopped, claim_jobs(budget)}
