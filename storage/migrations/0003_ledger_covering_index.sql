-- brushfire schema version 3: every reserve() and status() sums a user's rows inside the window.
-- With the columns that sum reads inside the index, SQLite answers from the index alone instead of
-- visiting each table row (about a third faster for a busy user), so the old index is replaced.

DROP INDEX ledger_user_window;
CREATE INDEX ledger_user_window ON ledger (guild_id, user_id, created_at, state, voided, lane, cost, bonus_cost);
