-- brushfire schema version 2: make restart recovery cheap and bounded.
-- The stale-reservation sweep and list_unfinished() scanned whole tables; partial indexes cover only
-- the few live rows. `attempts` counts how often recovery resubmitted a job, so a job that crashes
-- the worker every time is failed (and refunded) instead of being retried forever.

CREATE INDEX ledger_reserved ON ledger (created_at) WHERE state = 'reserved';
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE status IN ('pending', 'queued', 'running');
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0);
