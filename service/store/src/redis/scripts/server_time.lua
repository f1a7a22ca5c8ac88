-- The server's clock, read on the node that owns the pipeline's slot (the key routes the call).
local t = redis.call('TIME')
return {t[1], t[2]}
