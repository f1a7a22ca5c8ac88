-- Writes the budget in force (a budget from flags never replaces the operator's), then
-- reviews the automatic budget stop under it. Replies 1 if written.
if A.source == 'flags' and redis.call('HGET', K.budget, 'source') == 'operator' then return 0 end
redis.call('HSET', K.budget, 'limitMicros', A.limit_micros, 'period', A.period, 'warnPercent',
  A.warn_percent, 'enforce', A.enforce, 'source', A.source, 'updatedAt', fmt(now_ms()))
local budget = budget_in_force()
review_stop(budget, num(redis.call('HGET', budget.spend_key, 'spentMicros')))
return 1
