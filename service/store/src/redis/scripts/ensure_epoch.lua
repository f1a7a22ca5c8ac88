-- Creates the store epoch if there is none. Replies {epoch, created (0/1)}.
local current = redis.call('GET', K.epoch)
if current then return {current, 0} end
redis.call('SET', K.epoch, A.epoch)
return {A.epoch, 1}
