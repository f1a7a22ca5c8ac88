-- Claims up to A.max_jobs jobs, reserving each one's budget (see claim_lib.lua).
return claim_jobs()
