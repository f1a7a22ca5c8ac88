-- Reads the budget in force, the kill-switch, the current period's spend and the epoch, after
-- reviewing the automatic budget stop: cleared if it lapsed, switched on if spend is at an
-- enforced limit (e.g. after spend was restored), so what is read is what is enforced.
local budget = budget_in_force()
local sp = redis.call('HMGET', budget.spend_key, 'spentMicros', 'reservedMicros', 'inputTokens',
  'outputTokens', 'jobs', 'overrunMicros', 'restoredMicros', 'boundMicros', 'boundCalls')
review_stop(budget, num(sp[1]))
return {
  redis.call('HGETALL', K.budget),
  redis.call('HGETALL', K.killswitch),
  budget.period,
  {num(sp[1]), num(sp[2]), num(sp[3]), num(sp[4]), num(sp[5]), num(sp[6]), num(sp[7]),
  num(sp[8]), num(sp[9])},
  redis.call('GET', K.epoch) or '',
}
