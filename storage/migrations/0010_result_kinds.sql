-- Upscales and inpaint jobs (zoom out, pan, vary region; issue 19): jobs.kind and generations.kind also
-- take 'upscale' and 'inpaint'.
-- The CHECK only widens, so it is changed in place by SQLite's documented writable_schema procedure for
-- loosening a constraint (https://www.sqlite.org/lang_altertable.html, "otheralter"): no stored row
-- changes. A table rebuild would have to drop `jobs`, and with foreign keys on (they are, and cannot be
-- turned off inside the migration's transaction) that would cascade to every job's images.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'kind IN (''generate'', ''img2img'', ''edit'')',
                     'kind IN (''generate'', ''img2img'', ''edit'', ''upscale'', ''inpaint'')')
 WHERE type = 'table' AND name IN ('jobs', 'generations');
-- RESET bumps the schema cookie and reloads the schema, so every connection sees the new CHECK.
PRAGMA writable_schema = RESET;
