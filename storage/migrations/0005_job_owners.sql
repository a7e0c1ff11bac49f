-- brushfire schema version 5: who follows an unfinished job, and whether its outcome reached its user.
-- `owner` names the process following the job ("bot:PID:START" or "cli:PID:START"), so each entry point
-- settles on start exactly the jobs a dead process of its kind left behind, never one a live process
-- still follows (NULL: a row from before owners were recorded; the bot's, as before).
-- `delivered_at` is set once the outcome was handed over (posted, DMed, written out) or given up on, so
-- a crash between settling a job and telling its user is finished on the next start, and only then.

ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN delivered_at REAL;
UPDATE jobs SET delivered_at = COALESCE(finished_at, updated_at)
 WHERE status NOT IN ('pending', 'queued', 'running');
CREATE INDEX jobs_undelivered ON jobs (finished_at) WHERE delivered_at IS NULL;
