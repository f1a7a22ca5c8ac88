-- Appends a progress event while the lease is held.
if not holds_lease(K.job, A.token) then return 0 end
append_event(K.job, A.id, 'progress', A.body, nil, K.job_events)
return 1
