-- The budget in force and the automatic budget stop (mirrors `store/budget.rs`; the two are
-- held equal by the test `the_lua_and_rust_budget_stop_rules_agree`).
-- Needs K.budget, K.killswitch, K.spend_daily, K.spend_weekly, K.spend_monthly and
-- A.period_daily, A.period_weekly, A.period_monthly (the current period keys).

-- The stored budget; no budget written means no limit.
local function budget_in_force()
  local b = redis.call('HMGET', K.budget, 'limitMicros', 'period', 'enforce')
  local period = b[2] or 'monthly'
  local limit = num(b[1])
  local enforce = b[3] ~= '0'
  local spend_key, period_key = K.spend_monthly, A.period_monthly
  if period == 'daily' then
    spend_key, period_key = K.spend_daily, A.period_daily
  elseif period == 'weekly' then
    spend_key, period_key = K.spend_weekly, A.period_weekly
  end
  local enforced = 0
  if enforce then enforced = limit end
  return {limit = limit, enforced = enforced, spend_key = spend_key, period = period_key}
end

-- Whether an automatic budget stop has lapsed (`budget_stop_lapsed` in Rust).
local function stop_lapsed(ks, budget, spent)
  if ks[1] ~= 'true' or ks[2] ~= 'budget' then return false end
  local taken_in = ks[4]
  if taken_in and taken_in ~= budget.period then return true end
  if budget.enforced == 0 then return true end
  return budget.enforced > num(ks[3]) and budget.enforced > spent
end

-- The kill-switch fields the stop rule reads, in `stop_lapsed` order.
local function read_switch()
  return redis.call('HMGET', K.killswitch, 'enabled', 'setBy', 'limitMicros', 'period')
end

-- The kill-switch fields of the automatic budget stop, recording what it was taken under (Rust
-- renders the reason from these fields).
local function stop_fields(budget, spent)
  return {'enabled', 'true', 'setBy', 'budget', 'since', fmt(now_ms()),
    'limitMicros', fmt(budget.limit), 'spentMicros', fmt(spent), 'period', budget.period}
end

local function cleared_fields(set_by)
  return {'enabled', 'false', 'setBy', set_by, 'since', fmt(now_ms())}
end

local function set_budget_stop(budget, spent)
  redis.call('DEL', K.killswitch)
  redis.call('HSET', K.killswitch, unpack(stop_fields(budget, spent)))
end

local function clear_switch(set_by)
  redis.call('DEL', K.killswitch)
  redis.call('HSET', K.killswitch, unpack(cleared_fields(set_by)))
end

-- What the stop rule does after spend changed, given the switch `ks` (`read_switch`): 'clear'
-- a lapsed stop (and then 'set' it again if spend is at an enforced limit: 'reset'), 'set' the
-- stop when spend reached an enforced limit and no switch is on, or 'keep'.
local function stop_verdict(ks, budget, spent)
  local reached = budget.enforced > 0 and spent >= budget.enforced
  if ks[1] == 'true' then
    if not stop_lapsed(ks, budget, spent) then return 'keep' end
    if reached then return 'reset' end
    return 'clear'
  end
  if reached then return 'set' end
  return 'keep'
end

-- After spend changed: applies `stop_verdict`. Returns 1 if it switched the stop on.
local function review_stop(budget, spent)
  local verdict = stop_verdict(read_switch(), budget, spent)
  if verdict == 'clear' then clear_switch('budget') end
  if verdict == 'set' or verdict == 'reset' then
    set_budget_stop(budget, spent)
    return 1
  end
  return 0
end
