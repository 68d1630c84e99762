-- The audit chain becomes keyed: each record says which recipe its hash follows.
--   1: SHA-256 over the columns except region_path (every record written before this
--      migration; anyone able to write the database could recompute it);
--   2: HMAC-SHA256 under a key derived from carepay's key file, over every column
--      including region_path (records written from now on).
-- Recipe-1 records stay as they were; they verify only once a recipe-2 record
-- (`audit.legacy_sealed`, written by `carepay audit seal-legacy`) vouches for them.
ALTER TABLE audit_log ADD COLUMN recipe BIGINT NOT NULL DEFAULT 1;
