-- Reads the budget in force, the kill-switch, the current period's spend and the epoch;
-- clears an automatic budget stop that has lapsed.
local budget = budget_in_force()
local sp = redis.call('HMGET', budget.spend_key, 'spentMicros', 'reservedMicros', 'inputTokens',
  'outputTokens', 'jobs', 'overrunMicros', 'restoredMicros')
local ks = read_switch()
if stop_lapsed(ks, budget, num(sp[1])) then clear_switch('budget') end
return {
  redis.call('HGETALL', K.budget),
  redis.call('HGETALL', K.killswitch),
  budget.period,
  {num(sp[1]), num(sp[2]), num(sp[3]), num(sp[4]), num(sp[5]), num(sp[6]), num(sp[7])},
  redis.call('GET', K.epoch) or '',
}
