-- KEYS: active. ARGV: prefix, id, token, leaseMs
if not holds_lease(ARGV[2], ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[4]), ARGV[2])
return 1
