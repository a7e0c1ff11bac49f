-- brushfire schema version 9: stored results may be PNG, WebP or JPEG, in the format the server posts.
-- The worker encodes each picture once, in the server's format; the bot stores and posts those bytes as
-- they are (a PNG-only column would cost a second encode per picture). The format is read from the bytes.
ALTER TABLE generations RENAME COLUMN png TO image;
-- A column's CHECK can't be altered in place: a new column takes the old one's values.
ALTER TABLE guild_settings ADD COLUMN image_format TEXT NOT NULL DEFAULT 'jpeg' CHECK (image_format IN ('png', 'webp', 'jpeg'));
UPDATE guild_settings SET image_format = output_format;
ALTER TABLE guild_settings DROP COLUMN output_format;
ALTER TABLE guild_settings RENAME COLUMN image_format TO output_format;
