-- KEYS: spend. ARGV: prefix, amount, limit (0 = none)
local fields = redis.call('HMGET', KEYS[1], 'spentMicros', 'reservedMicros')
local spent, reserved = tonumber(fields[1] or '0'), tonumber(fields[2] or '0')
local amount, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit > 0 and spent + reserved + amount > limit then return 0 end
redis.call('HINCRBY', KEYS[1], 'reservedMicros', amount)
redis.call('EXPIRE', KEYS[1], 34560000)
return 1
