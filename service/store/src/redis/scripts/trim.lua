-- Deletes finished (and cancelled) jobs past their retention, at most A.batch per set and call, and the
-- pipeline stream's entries older than STREAM_MAX_AGE_MS (their ids are server times). An
-- idempotency mapping goes with its job only if it still points at that job (the key may
-- have been reused after the mapping expired).
local cutoff = now_ms() - num(A.max_age_ms)
local max_count, batch = num(A.max_count), num(A.batch)
local removed = 0
for _, set in ipairs({K.completed, K.failed, K.cancelled}) do
  local ids = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. cutoff, 'LIMIT', 0, batch)
  local over = redis.call('ZCARD', set) - #ids - max_count
  if over > 0 then
    local extra = redis.call('ZRANGE', set, #ids, #ids + math.min(over, batch) - 1)
    for _, id in ipairs(extra) do table.insert(ids, id) end
  end
  for _, id in ipairs(ids) do
    local job_key = K.job_prefix .. id
    local digest = redis.call('HGET', job_key, 'idem')
    if digest and redis.call('GET', K.idem_prefix .. digest) == id then
      redis.call('DEL', K.idem_prefix .. digest)
    end
    redis.call('DEL', job_key, job_key .. ':events')
    redis.call('ZREM', set, id)
    removed = removed + 1
  end
end
-- Exact, not `~`: a quiet pipeline's few entries share one node, which `~` never drops.
redis.call('XTRIM', K.events, 'MINID', fmt(now_ms() - STREAM_MAX_AGE_MS))
return removed
