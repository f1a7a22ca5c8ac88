-- Reads the budget in force, the kill-switch, the current period's spend and the epoch, and
-- writes nothing (`no-writes`): the kill-switch is reported as the budget stop's rule makes it
-- (`stop_verdict`), which the next write (submit, claim, finish, set_budget) stores, so what is
-- read is what is enforced.
local budget = budget_in_force()
local sp = redis.call('HMGET', budget.spend_key, 'spentMicros', 'reservedMicros', 'inputTokens',
  'outputTokens', 'jobs', 'overrunMicros', 'restoredMicros', 'boundMicros', 'boundCalls')
local spent = num(sp[1])
local switch
local verdict = stop_verdict(read_switch(), budget, spent)
if verdict == 'clear' then
  switch = cleared_fields('budget')
elseif verdict == 'set' or verdict == 'reset' then
  switch = stop_fields(budget, spent)
else
  switch = redis.call('HGETALL', K.killswitch)
end
return {
  redis.call('HGETALL', K.budget),
  switch,
  budget.period,
  {spent, num(sp[2]), num(sp[3]), num(sp[4]), num(sp[5]), num(sp[6]), num(sp[7]),
  num(sp[8]), num(sp[9])},
  redis.call('GET', K.epoch) or '',
}
