-- Who acts: database roles are the boundary (security model, README).
-- The roles set up by grant_application(), grant_backoffice() and grant_restore()
-- (70_rights.sql).

-- The roles given grant_application(), grant_backoffice() or
-- grant_restore().  An empty subscription.actor is trusted only for the
-- back-office ones.
CREATE TABLE subscription.granted_role (
    role       regrole NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('application', 'backoffice', 'restore')),
    granted_at timestamptz NOT NULL DEFAULT subscription.now(),
    PRIMARY KEY (role, kind)
);

COMMENT ON TABLE subscription.granted_role IS
'Roles set up by grant_application(), grant_backoffice() and grant_restore(); back-office roles are trusted without an actor';

-- Restores by a role that is not a superuser (docs/design.md#restores).
-- Such a restore runs the extension's triggers, so a trigger that derives
-- rows the dump also holds (history, default licenses, seat counters and
-- service seats, discount and credit lines) must know a copied row.  It
-- knows it from the data, asked per row: the row comes from the role given
-- grant_restore() (as itself, the calling role, not a member of it) and
-- its id was not issued by the table's identity sequence, which a restore
-- sets only after the rows.  The limit guards of application tables skip
-- that role's inserts: the dump holds the usage counters, trusted and
-- compared by verify() at the end.  No other role is affected, so a tenant
-- cannot use any of this to pass a limit.
CREATE FUNCTION subscription.restoring_role()
RETURNS boolean
AS 'MODULE_PATHNAME', 'restoring_role'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.restoring_role() IS
'Internal (C): whether the calling role is one given grant_restore()';

-- An inlinable SQL-standard body: the caller's CASE reads the sequence only
-- for a restoring role.  Its callers run as the extension's owner, who
-- reads the sequences.
CREATE FUNCTION subscription.restored_copy(id_sequence regclass, id bigint)
RETURNS boolean
LANGUAGE sql
RETURN CASE WHEN subscription.restoring_role()
            THEN restored_copy.id OPERATOR(pg_catalog.>)
                 coalesce(pg_catalog.pg_sequence_last_value(restored_copy.id_sequence), 0)
            ELSE false END;

COMMENT ON FUNCTION subscription.restored_copy(regclass, bigint) IS
'Internal: whether a row is copied in by a restore (a restoring role, an id its sequence has not issued)';
