-- KEYS: spend. ARGV: prefix, reserved, cost, inputTokens, outputTokens
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reservedMicros') or '0')
redis.call('HSET', KEYS[1], 'reservedMicros', fmt(math.max(0, reserved - tonumber(ARGV[2]))))
redis.call('HINCRBY', KEYS[1], 'spentMicros', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'inputTokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'outputTokens', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'jobs', 1)
redis.call('EXPIRE', KEYS[1], 34560000)
return redis.call('HGETALL', KEYS[1])
