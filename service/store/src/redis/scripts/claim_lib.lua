-- Claiming jobs with their budget reservation: shared by `claim` and `finish` (which claims
-- the next jobs in the same call, like BullMQ's moveToFinished).
-- Needs K.waiting, K.delayed, K.active, K.failed, K.job_prefix, K.events, K.outcomes and the
-- budget keys; A.worker, A.lease_ms, A.token, A.max_jobs, A.price_in, A.price_out,
-- A.prompt_overhead, A.out_per_card, A.out_overhead, A.active_body, A.started_body,
-- A.budget_wait_body, A.budget_failed_body, A.budget_error, A.budget_code.

-- Upper bound of a job's cost (`Pricing::reservation` in Rust): one token per input byte plus
-- the fixed prompt, and the `max_tokens` asked for.
local function reservation(input_bytes, card_count)
  local cards = math.max(1, num(card_count))
  local input = num(input_bytes) + num(A.prompt_overhead)
  local output = cards * num(A.out_per_card) + num(A.out_overhead)
  local micros = input * tonumber(A.price_in) + output * tonumber(A.price_out)
  if micros > 0 then return math.ceil(micros) end
  return 0
end

-- Moves due retries back to `waiting`.
local function promote_delayed(now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    redis.call('HSET', K.job_prefix .. id, 'state', 'waiting')
    redis.call('RPUSH', K.waiting, id)
  end
end

-- Fails a job its budget can never cover.
local function fail_for_budget(job_key, id, now)
  redis.call('HSET', job_key, 'state', 'failed', 'finishedAt', fmt(now), 'error', A.budget_error,
    'errorCode', A.budget_code)
  redis.call('HDEL', job_key, 'budgetWait')
  redis.call('ZADD', K.failed, now, id)
  count_outcome('failed')
  local attempts = num(redis.call('HGET', job_key, 'attempts'))
  append_event(job_key, id, 'failed', A.budget_failed_body, {'attemptsMade', attempts})
end

-- Takes up to A.max_jobs jobs under `budget` (from `budget_in_force`, which the caller may
-- share with its own work). Returns {blocked, budget_failed, n, fields of each job...}.
-- Each job costs one HMGET and one HSET: attempts and eventSeq are read and written with the
-- rest rather than incremented one by one.
local function claim_jobs(budget)
  local now = now_ms()
  promote_delayed(now)
  local want = num(A.max_jobs)
  local out = {0, 0, 0}
  if want <= 0 then return out end
  local spent, reserved = 0, 0
  if budget.enforced > 0 then
    local sp = redis.call('HMGET', budget.spend_key, 'spentMicros', 'reservedMicros')
    spent, reserved = num(sp[1]), num(sp[2])
  end
  local added, taken, failed, stopped = 0, 0, 0, false
  local deadline = now + num(A.lease_ms)
  local started = A.started_body ~= ''
  while taken < want and failed < 100 do
    local id
    if budget.enforced > 0 then
      -- Look before taking: a job that does not fit stays first in line.
      id = redis.call('LINDEX', K.waiting, 0)
    else
      id = redis.call('LPOP', K.waiting)
    end
    if not id then break end
    local job_key = K.job_prefix .. id
    local f = redis.call('HMGET', job_key, 'inputBytes', 'cardCount', 'state', 'budgetWait',
      'attempts', 'eventSeq', 'request', 'maxAttempts', 'stalls', 'createdAt', 'owner',
      'traceparent')
    if not f[3] then
      -- The record is gone (lost with the store's data): nothing to run.
      if budget.enforced > 0 then redis.call('LPOP', K.waiting) end
    else
      local amount = reservation(f[1], f[2])
      local fits = budget.enforced == 0 or spent + reserved + amount <= budget.enforced
      if not fits and reserved > 0 then
        -- Running jobs may settle below their reservations: wait for them, first in line,
        -- without using an attempt.
        out[1] = 1
        if f[4] ~= '1' then
          redis.call('HSET', job_key, 'budgetWait', '1')
          append_event(job_key, id, 'waiting', A.budget_wait_body)
        end
        break
      end
      if budget.enforced > 0 then redis.call('LPOP', K.waiting) end
      if not fits then
        fail_for_budget(job_key, id, now)
        failed = failed + 1
        if not stopped and read_switch()[1] ~= 'true' then
          set_budget_stop(budget, spent)
          stopped = true
        end
      else
        local attempts = num(f[5]) + 1
        local seq = num(f[6])
        local events = {{'active', event_text(seq + 1, id, A.active_body, {'attemptsMade', attempts}), seq + 1}}
        if started then
          events[2] = {'progress',
            event_text(seq + 2, id, A.started_body, {'cardCount', num(f[2])}), seq + 2}
        end
        redis.call('HSET', job_key, 'state', 'active', 'attempts', attempts, 'startedAt', fmt(now),
          'lease', A.token, 'worker', A.worker, 'reserved', fmt(amount), 'reservedPeriod',
          budget.period, 'eventSeq', seq + #events)
        if f[4] == '1' then redis.call('HDEL', job_key, 'budgetWait') end
        redis.call('ZADD', K.active, deadline, id)
        push_events(job_key, id, events)
        reserved = reserved + amount
        added = added + amount
        local n = #out
        out[n + 1] = id
        out[n + 2] = f[7]
        out[n + 3] = attempts
        out[n + 4] = f[8]
        out[n + 5] = f[9]
        out[n + 6] = f[10]
        out[n + 7] = fmt(now)
        out[n + 8] = seq + #events
        out[n + 9] = f[11] or ''
        out[n + 10] = f[12] or ''
        out[n + 11] = fmt(amount)
        out[n + 12] = budget.period
        taken = taken + 1
      end
    end
  end
  if added > 0 then
    -- The hash's expiry is set when it first holds a reservation (or a settled cost).
    if redis.call('HINCRBY', budget.spend_key, 'reservedMicros', added) == added then
      redis.call('EXPIRE', budget.spend_key, SPEND_TTL)
    end
  end
  out[2] = failed
  out[3] = taken
  return out
end
