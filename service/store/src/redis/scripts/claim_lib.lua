-- Claiming jobs with their budget reservation: shared by `claim` and `finish` (which claims
-- the next jobs in the same call, like BullMQ's moveToFinished).
-- Needs the keys of queue_lib.lua, K.delayed, K.active, K.failed, K.job_prefix, K.events,
-- K.outcomes, K.claim_record and the budget keys; A.worker, A.lease_ms, A.token, A.max_jobs,
-- A.client_cap, A.price_in, A.price_out, A.prompt_overhead, A.out_per_card, A.out_overhead,
-- A.active_body, A.started_body, A.budget_wait_body, A.budget_failed_body, A.budget_error,
-- A.budget_code.

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

-- Moves due retries back to their clients' lines.
local function promote_delayed(now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    local job_key = K.job_prefix .. id
    redis.call('HSET', job_key, 'state', 'waiting')
    enqueue(id, redis.call('HGET', job_key, 'client'))
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

-- The reply entry of one claimed job: 12 fields, always all present (a nil would end the
-- reply array there), in the order `parse::claimed` reads them.
local function claimed_entry(out, id, request, attempts, max_attempts, stalls, created_at,
    started_at, seq, owner, traceparent, amount, period)
  local n = #out
  out[n + 1] = id
  out[n + 2] = request or ''
  out[n + 3] = num(attempts)
  out[n + 4] = num(max_attempts)
  out[n + 5] = num(stalls)
  out[n + 6] = num(created_at)
  out[n + 7] = started_at or '0'
  out[n + 8] = num(seq)
  out[n + 9] = owner or ''
  out[n + 10] = traceparent or ''
  out[n + 11] = amount or '0'
  out[n + 12] = period or ''
end

-- A repeat of a claim whose reply was lost (same A.token): the first call's answer, rebuilt
-- from its record and the jobs it took that this token still holds; nil if there is no record.
local function replay_claim()
  local rec = redis.call('HMGET', K.claim_record, 'jobs', 'blocked', 'failed')
  if not rec[1] then return nil end
  local out = {num(rec[2]), num(rec[3]), 0}
  local taken = 0
  for id in string.gmatch(rec[1], '%S+') do
    local f = redis.call('HMGET', K.job_prefix .. id, 'state', 'lease', 'request', 'attempts',
      'maxAttempts', 'stalls', 'createdAt', 'startedAt', 'eventSeq', 'owner', 'traceparent',
      'reserved', 'reservedPeriod')
    if f[1] == 'active' and f[2] == A.token then
      claimed_entry(out, id, f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13])
      taken = taken + 1
    end
  end
  out[3] = taken
  return out
end

-- Starts one claimed job under this call's lease: its `active` (and folded `progress`) events,
-- its reservation and deadline, and its reply entry. `f` is the job's fields as `claim_jobs`
-- reads them.
local function start_job(out, job_key, id, f, amount, now, deadline, started, period)
  local attempts = num(f[5]) + 1
  local seq = num(f[6])
  local events = {{'active', event_text(seq + 1, id, A.active_body, {'attemptsMade', attempts}), seq + 1}}
  if started then
    events[2] = {'progress',
      event_text(seq + 2, id, A.started_body, {'cardCount', num(f[2])}), seq + 2}
  end
  redis.call('HSET', job_key, 'state', 'active', 'attempts', attempts, 'startedAt', fmt(now),
    'lease', A.token, 'worker', A.worker, 'reserved', fmt(amount), 'reservedPeriod',
    period, 'eventSeq', seq + #events)
  if f[4] == '1' then redis.call('HDEL', job_key, 'budgetWait') end
  redis.call('ZADD', K.active, deadline, id)
  push_events(job_key, id, events)
  claimed_entry(out, id, f[7], attempts, f[8], f[9], f[10], fmt(now), seq + #events,
    f[11], f[12], fmt(amount), period)
end

-- Takes up to A.max_jobs jobs under `budget` (from `budget_in_force`, which the caller may
-- share with its own work). Returns {blocked, budget_failed, n, fields of each job...}.
-- Each job costs one HMGET and one HSET: attempts and eventSeq are read and written with the
-- rest rather than incremented one by one. A call that took or failed jobs leaves a record
-- under its token for one lease, so a repeat of it answers the same and takes nothing more.
local function claim_jobs(budget)
  local now = now_ms()
  local want = num(A.max_jobs)
  if want <= 0 then
    promote_delayed(now)
    return {0, 0, 0}
  end
  local replayed = replay_claim()
  if replayed then return replayed end
  promote_delayed(now)
  local out = {0, 0, 0}
  local spent, reserved = 0, 0
  if budget.enforced > 0 then
    local sp = redis.call('HMGET', budget.spend_key, 'spentMicros', 'reservedMicros')
    spent, reserved = num(sp[1]), num(sp[2])
  end
  local added, taken, failed, stopped = 0, 0, 0, false
  local deadline = now + num(A.lease_ms)
  local started = A.started_body ~= ''
  local cap = num(A.client_cap)
  local ids = {}
  -- The client whose turn it is (queue_lib.lua), how many more it may start, and how many
  -- each client started in this call. With nobody else ready a client keeps its turn.
  local turn, room = nil, 0
  local started_by = {}
  local dequeued = 0
  while taken < want and failed < 100 do
    if not turn then turn, room = next_turn(cap, started_by) end
    local queue = queue_of(turn)
    local id
    if budget.enforced > 0 then
      -- Look before taking: a job that does not fit stays first in line.
      id = redis.call('LINDEX', queue, 0)
    else
      id = redis.call('LPOP', queue)
    end
    if not id then
      if turn == '' then break end
      -- The client's line is empty: it leaves the ring (its next job puts it back).
      turn = nil
    else
      local job_key = K.job_prefix .. id
      local f = redis.call('HMGET', job_key, 'inputBytes', 'cardCount', 'state', 'budgetWait',
        'attempts', 'eventSeq', 'request', 'maxAttempts', 'stalls', 'createdAt', 'owner',
        'traceparent')
      local blocked = false
      if not f[3] then
        -- The record is gone (lost with the store's data): nothing to run.
        if budget.enforced > 0 then redis.call('LPOP', queue) end
        if turn ~= '' then dequeued = dequeued + 1 end
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
          blocked = true
        else
          if budget.enforced > 0 then redis.call('LPOP', queue) end
          if turn ~= '' then dequeued = dequeued + 1 end
          if not fits then
            fail_for_budget(job_key, id, now)
            failed = failed + 1
            if not stopped and read_switch()[1] ~= 'true' then
              set_budget_stop(budget, spent)
              stopped = true
            end
          else
            start_job(out, job_key, id, f, amount, now, deadline, started, budget.period)
            reserved = reserved + amount
            added = added + amount
            ids[#ids + 1] = id
            taken = taken + 1
            if turn ~= '' then
              started_by[turn] = (started_by[turn] or 0) + 1
              room = room - 1
            end
          end
        end
      end
      if blocked then break end
      -- The turn passes: to the held clients at the cap, to the ring's next client if any.
      if turn ~= '' then
        if room <= 0 then
          if redis.call('LLEN', queue) > 0 then redis.call('SADD', K.held, turn) end
          turn = nil
        elseif redis.call('LLEN', K.ready) > 0 then
          if redis.call('LLEN', queue) > 0 then redis.call('RPUSH', K.ready, turn) end
          turn = nil
        end
      end
    end
  end
  -- The client whose turn it was keeps its place, first in line.
  if turn and turn ~= '' and redis.call('LLEN', queue_of(turn)) > 0 then
    redis.call('LPUSH', K.ready, turn)
  end
  unqueued(dequeued)
  actives_started(started_by)
  if added > 0 then
    -- The hash's expiry is set when it first holds a reservation (or a settled cost).
    if redis.call('HINCRBY', budget.spend_key, 'reservedMicros', added) == added then
      redis.call('EXPIRE', budget.spend_key, SPEND_TTL)
    end
  end
  out[2] = failed
  out[3] = taken
  if taken > 0 or failed > 0 then
    redis.call('HSET', K.claim_record, 'jobs', table.concat(ids, ' '), 'blocked', out[1],
      'failed', failed)
    redis.call('PEXPIRE', K.claim_record, math.max(1, num(A.lease_ms)))
  end
  return out
end
