"""Campaign expansion and bookkeeping: plan (ids, hashes, order) and the per-host manifest."""
