-- Fair queuing: each client's waiting jobs are a list of their own (`K.client_queue_prefix` ..
-- client digest), and `K.ready` is a ring of the clients with waiting work that may start
-- another job, each at most once. A claim takes the first job of the first client in the ring
-- and puts the client back at the end if it has more: round-robin across clients, O(1) per
-- job, whatever one client's backlog. A client at its concurrency cap leaves the ring for
-- `K.held` until one of its active jobs ends. `K.queued` counts the jobs in clients' lists
-- (the queue depth, with `K.waiting`). Jobs from before fair queuing (no `client` field) wait
-- in `K.waiting`, claimed when no client is ready.
-- Needs K.waiting, K.ready, K.client_queue_prefix, K.client_active, K.held, K.queued.

local function queue_of(client)
  if not client or client == '' then return K.waiting end
  return K.client_queue_prefix .. client
end

-- Puts a job in its client's line (`queue`, if given, is the list's declared key): at the end,
-- or at the front for a job given back. Returns true if this made work ready where none was
-- (idle workers may be asleep).
local function enqueue(id, client, front, queue)
  local q = queue or queue_of(client)
  local push = front and 'LPUSH' or 'RPUSH'
  local n = redis.call(push, q, id)
  if q == K.waiting then return n == 1 and redis.call('LLEN', K.ready) == 0 end
  redis.call('INCR', K.queued)
  if n == 1 and redis.call('SISMEMBER', K.held, client) == 0 then
    return redis.call(push, K.ready, client) == 1
  end
  return false
end

local function unqueued(count)
  if count > 0 and redis.call('DECRBY', K.queued, count) <= 0 then redis.call('DEL', K.queued) end
end

-- Takes a waiting job out of its client's line (cancellation). True if it was there.
local function dequeue(id, client)
  local q = queue_of(client)
  if redis.call('LREM', q, 1, id) == 0 then return false end
  if q ~= K.waiting then
    unqueued(1)
    -- A client without waiting work leaves the ring, so that its next job puts it back once.
    if redis.call('LLEN', q) == 0 then redis.call('LREM', K.ready, 1, client) end
  end
  return true
end

-- One of `client`'s active jobs ended: counts it, and a client held at its cap takes its
-- turn again (at the end of the ring). True if that made work ready.
local function active_ended(client)
  if not client or client == '' then return false end
  if redis.call('HINCRBY', K.client_active, client, -1) <= 0 then
    redis.call('HDEL', K.client_active, client)
  end
  if redis.call('SREM', K.held, client) == 1 and redis.call('LLEN', queue_of(client)) > 0 then
    return redis.call('RPUSH', K.ready, client) == 1
  end
  return false
end

-- Counts jobs started per client (`started`: client -> count, from one claim).
local function actives_started(started)
  for client, count in pairs(started) do
    redis.call('HINCRBY', K.client_active, client, count)
  end
end

-- The client whose turn is next and how many more jobs it may start (`cap` 0: no cap); clients
-- at their cap move to `K.held` on the way. '' (the jobs from before fair queuing) when no
-- client is ready. `started`: jobs this call already started per client.
local function next_turn(cap, started)
  while true do
    local client = redis.call('LPOP', K.ready)
    if not client then return '', math.huge end
    local room = math.huge
    if cap > 0 then
      room = cap - num(redis.call('HGET', K.client_active, client)) - (started[client] or 0)
    end
    if room > 0 then return client, room end
    redis.call('SADD', K.held, client)
  end
end

-- The first job in line (for the budget-wait wake-up), or nil.
local function first_waiting()
  local client = redis.call('LINDEX', K.ready, 0)
  return redis.call('LINDEX', queue_of(client), 0)
end

-- Whether any job may be claimed now.
local function work_ready()
  return redis.call('LLEN', K.ready) > 0 or redis.call('LLEN', K.waiting) > 0
end
