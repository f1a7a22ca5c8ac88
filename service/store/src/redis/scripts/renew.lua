-- Extends leases: ARGV after lease_ms holds id, token pairs. Replies one 0/1 per pair.
local deadline = now_ms() + num(A.lease_ms)
local renewed = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds_lease(K.job_prefix .. id, token) then
    redis.call('ZADD', K.active, deadline, id)
    renewed[#renewed + 1] = 1
  else
    renewed[#renewed + 1] = 0
  end
end
return renewed
