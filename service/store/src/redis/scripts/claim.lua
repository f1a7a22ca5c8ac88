-- Claims up to A.max_jobs jobs, reserving each one's budget (see claim_lib.lua).
local reply = claim_jobs(budget_in_force())
-- Submissions wake idle workers only when they find the queue empty; a full batch that leaves
-- jobs waiting wakes another worker for the rest.
if reply[3] > 0 and reply[3] == num(A.max_jobs) and work_ready() then
  redis.call('RPUSH', K.wake, '1')
  redis.call('LTRIM', K.wake, -64, -1)
end
return reply
