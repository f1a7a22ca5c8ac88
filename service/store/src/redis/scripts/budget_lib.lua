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

-- Switches the automatic budget stop on, recording what it was taken under (Rust renders the
-- reason from these fields).
local function set_budget_stop(budget, spent)
  redis.call('DEL', K.killswitch)
  redis.call('HSET', K.killswitch, 'enabled', 'true', 'setBy', 'budget', 'since', fmt(now_ms()),
    'limitMicros', fmt(budget.limit), 'spentMicros', fmt(spent), 'period', budget.period)
end

local function clear_switch(set_by)
  redis.call('DEL', K.killswitch)
  redis.call('HSET', K.killswitch, 'enabled', 'false', 'setBy', set_by, 'since', fmt(now_ms()))
end

-- After spend changed: clears a lapsed stop, or switches the stop on when spend reached an
-- enforced limit and no switch is on. Returns 1 if it switched the stop on.
local function review_stop(budget, spent)
  local ks = read_switch()
  if ks[1] == 'true' then
    if stop_lapsed(ks, budget, spent) then clear_switch('budget') else return 0 end
  end
  if budget.enforced > 0 and spent >= budget.enforced then
    set_budget_stop(budget, spent)
    return 1
  end
  return 0
end
