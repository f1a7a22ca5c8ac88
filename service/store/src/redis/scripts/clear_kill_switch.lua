-- Clears the kill-switch only if it is on and held by A.set_by.
local f = redis.call('HMGET', K.killswitch, 'enabled', 'setBy')
if f[1] ~= 'true' or f[2] ~= A.set_by then return 0 end
redis.call('DEL', K.killswitch)
redis.call('HSET', K.killswitch, 'enabled', 'false', 'setBy', A.set_by, 'since', fmt(now_ms()))
return 1
