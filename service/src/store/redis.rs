//! Redis store: shared by api, worker and operator pods; multi-key changes are Lua scripts.
