-- brushfire schema version 6: a job remembers its member's language.
-- A result posted after the interaction (in the channel when the token expired, or after a restart) is
-- written in the language of the member who asked; NULL (older jobs) falls back to the server's, then English.

ALTER TABLE jobs ADD COLUMN language TEXT CHECK (language IS NULL OR length(language) BETWEEN 2 AND 8);
