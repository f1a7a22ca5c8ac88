-- A worker's heartbeat, stamped with the server's clock: its hash (expiring after A.ttl_ms)
-- and its deadline in the live set, from which workers past their deadline are dropped.
-- Liveness then never depends on the pods' clocks agreeing. Replies the server time (ms).
local now = now_ms()
local ttl = num(A.ttl_ms)
redis.call('HSET', K.worker, 'pod', A.pod, 'active', A.active, 'concurrency', A.concurrency,
  'breaker', A.breaker, 'draining', A.draining, 'lastSeen', fmt(now))
redis.call('PEXPIRE', K.worker, math.max(1, ttl))
redis.call('ZADD', K.workers, now + ttl, A.worker_id)
redis.call('ZREMRANGEBYSCORE', K.workers, '-inf', now)
return fmt(now)
