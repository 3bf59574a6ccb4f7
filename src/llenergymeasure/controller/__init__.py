"""The controller side: the plan (ids, hashes, order), the run lock, the ETA, what lem_plan does."""
