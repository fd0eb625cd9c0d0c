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

-- Citus (issue 17): apply_downgrade's trim of a distributed table, run on
-- the node of the tenant's shards as the table's owner there; the
-- coordinator's apply_downgrade calls it over the extension owner's
-- connections (src/downgrade.c, TrimTable), which write the tenant's
-- shard group before and after the trim.  Only the extension's owner.
CREATE FUNCTION subscription.shard_trim(account_shard regclass, relation regclass, feature text,
                                        account bigint, lim bigint)
RETURNS TABLE (action text, row_id text, old_value bigint, new_value bigint, old_row jsonb)
AS 'MODULE_PATHNAME', 'shard_trim'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.shard_trim(regclass, regclass, text, bigint, bigint) IS
'Internal (Citus): apply_downgrade''s trim of one account in the shard of a limited table on this node, as the table''s owner';
