-- One step of deleting every key of the pipeline: SCAN from A.cursor for keys matching
-- A.pattern (the pipeline's prefix, glob characters escaped) and UNLINK them. The caller loops
-- until the cursor is 0. Run as a script so that it executes on the node owning the pipeline's
-- slot (the declared key routes it there on a cluster, where a plain SCAN would go to any
-- node); every matching key shares that slot, so the UNLINKs stay on this node.
-- Replies: {next cursor, keys unlinked}
local reply = redis.call('SCAN', A.cursor, 'MATCH', A.pattern, 'COUNT', A.count)
local keys = reply[2]
for i = 1, #keys do
  redis.call('UNLINK', keys[i])
end
return {reply[1], #keys}
