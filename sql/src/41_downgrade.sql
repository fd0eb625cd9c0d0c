-- Downgrades (C4-C12), in C: the archive they write is
-- subscription.trimmed (15_limits.sql).

-- C4-C12: the pending downgrade takes effect now and every registered
-- table of the account is trimmed to the new limits (src/downgrade.c).
CREATE FUNCTION subscription.apply_downgrade(subscription_id bigint, dry_run boolean DEFAULT false)
RETURNS TABLE (feature text, relation regclass, action text, row_id text, old_value bigint, new_value bigint)
AS 'MODULE_PATHNAME', 'apply_downgrade'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.apply_downgrade(bigint, boolean) IS
'Apply the pending downgrade and trim the account''s registered tables to the new limits; dry_run previews it (C4-C12)';

-- The keyed form (docs/design.md#keyed-forms): the same code, given the
-- tenant first.
CREATE FUNCTION subscription.apply_downgrade(tenant_id bigint, subscription_id bigint, dry_run boolean)
RETURNS TABLE (feature text, relation regclass, action text, row_id text, old_value bigint, new_value bigint)
AS 'MODULE_PATHNAME', 'apply_downgrade'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.apply_downgrade(bigint, bigint, boolean) IS
'Apply the pending downgrade and trim the account''s registered tables to the new limits; dry_run previews it (C4-C12) (keyed form: the tenant first, docs/design.md#keyed-forms)';
