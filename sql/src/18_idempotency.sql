-- Idempotency keys (issue 20, item 4; docs/integrating.md#idempotency-keys):
-- the first call of a mutating public function made under a key, its
-- arguments and its result, which a retry under the same key is given
-- instead of running the function again (Q1-Q4, docs/rules.md).

-- A tenant table (docs/design.md#tenant-keys): the key is the tenant's,
-- and its actor's (current_actor()): another actor's call under it is
-- another call, so a key never hands one actor's result to another.
-- result: the first call's result as JSON (null for a void function, an
-- array of its rows for a set-returning one); NULL while the call runs.
CREATE TABLE subscription.idempotency_key (
    tenant_id bigint NOT NULL,
    key       text NOT NULL CHECK (key <> '' AND pg_catalog.length(key) <= 255),
    function  text NOT NULL,
    arguments jsonb NOT NULL,
    actor     text NOT NULL,
    result    jsonb,
    at        timestamptz NOT NULL,
    CONSTRAINT idempotency_key_pkey PRIMARY KEY (tenant_id, key)
);
-- prune_idempotency_keys reads by age, across tenants
CREATE INDEX idempotency_key_at_idx ON subscription.idempotency_key (at);

COMMENT ON TABLE subscription.idempotency_key IS
'The first call made under each idempotency key: its function, arguments, actor and result (Q1-Q4, docs/integrating.md)';
