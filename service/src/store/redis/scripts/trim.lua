-- KEYS: completed, failed. ARGV: prefix, maxAgeMs, maxCount, batch
local cutoff = now_ms() - tonumber(ARGV[2])
local max_count, batch = tonumber(ARGV[3]), tonumber(ARGV[4])
local removed = 0
for _, set in ipairs(KEYS) do
  local ids = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. cutoff, 'LIMIT', 0, batch)
  local over = redis.call('ZCARD', set) - #ids - max_count
  if over > 0 then
    local extra = redis.call('ZRANGE', set, #ids, #ids + math.min(over, batch) - 1)
    for _, id in ipairs(extra) do table.insert(ids, id) end
  end
  for _, id in ipairs(ids) do
    local key = redis.call('HGET', job_key(id), 'idempotencyKey')
    if key then redis.call('DEL', prefix .. 'idem:' .. key) end
    redis.call('DEL', job_key(id), job_key(id) .. ':events')
    redis.call('ZREM', set, id)
    removed = removed + 1
  end
end
return removed
