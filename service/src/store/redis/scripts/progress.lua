-- KEYS: job. ARGV: prefix, id, token, eventJson
if not holds_lease(ARGV[2], ARGV[3]) then return 0 end
append_event(ARGV[2], ARGV[4])
return 1
