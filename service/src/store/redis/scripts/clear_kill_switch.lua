-- KEYS: killswitch. ARGV: prefix, setBy
local fields = redis.call('HMGET', KEYS[1], 'enabled', 'setBy')
if fields[1] ~= 'true' or fields[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'enabled', 'false', 'setBy', ARGV[2], 'since', fmt(now_ms()))
redis.call('HDEL', KEYS[1], 'reason')
return 1
