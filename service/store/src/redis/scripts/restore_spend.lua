-- Raises a period's spend to at least A.spent_micros (restoring what the store lost) and
-- records the amount restored. Replies the spend after.
local current = num(redis.call('HGET', K.spend, 'spentMicros'))
local target = num(A.spent_micros)
if target > current then
  redis.call('HSET', K.spend, 'spentMicros', fmt(target))
  redis.call('HINCRBY', K.spend, 'restoredMicros', target - current)
  redis.call('EXPIRE', K.spend, SPEND_TTL)
end
local sp = redis.call('HMGET', K.spend, 'spentMicros', 'reservedMicros', 'inputTokens',
  'outputTokens', 'jobs', 'overrunMicros', 'restoredMicros', 'boundMicros', 'boundCalls')
return {num(sp[1]), num(sp[2]), num(sp[3]), num(sp[4]), num(sp[5]), num(sp[6]), num(sp[7]),
  num(sp[8]), num(sp[9])}
