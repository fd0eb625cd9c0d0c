-- Seats (Z4, R2, R10, R11, R12): the licenses of a subscription held by
-- members, the counter that serializes their writes, and the service seat
-- key of R11.  The guard that keeps them is in 31_seats.sql.

CREATE TABLE subscription.license (
    subscription_id bigint NOT NULL,
    -- cascade: a seat is what its member holds; deleting the member releases
    -- it as license_release() would (the guard counts it, history records it)
    member_id       bigint NOT NULL,
    assigned_at     timestamptz NOT NULL DEFAULT subscription.now(),
    tenant_id       bigint NOT NULL,
    CONSTRAINT license_pkey PRIMARY KEY (tenant_id, subscription_id, member_id),
    -- a member of another tenant is refused by the key (23503), one of
    -- another account of the tenant by the license guard (L11, 22023)
    CONSTRAINT license_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id),
    CONSTRAINT license_member_id_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES subscription.member (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ON subscription.license (member_id);

COMMENT ON TABLE subscription.license IS 'Seats of a subscription held by members; guarded on every write path (Z4, R11)';

-- The seat counter of a subscription: the row that serializes its license
-- writes.  Every write of subscription.license moves "used" by one locked
-- UPDATE per subscription and statement, never past "capacity" (quantity
-- plus the license units of active add-on batches): that is the invariant,
-- and the CHECK keeps it whatever path writes.
CREATE TABLE subscription.license_counter (
    subscription_id bigint NOT NULL,
    used            integer NOT NULL DEFAULT 0,
    capacity        integer NOT NULL,
    active          boolean NOT NULL,
    CONSTRAINT license_counter_within_capacity CHECK (used >= 0 AND used <= capacity),
    tenant_id       bigint NOT NULL,
    CONSTRAINT license_counter_pkey PRIMARY KEY (tenant_id, subscription_id),
    -- cascade: derived data, the count of the subscription's license rows
    CONSTRAINT license_counter_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id) ON DELETE CASCADE
);
-- the guard reads a counter by its subscription (rowwrite.c's key lookups)
CREATE INDEX ON subscription.license_counter (subscription_id);

COMMENT ON TABLE subscription.license_counter IS 'The seat counter of a subscription: used never exceeds capacity';

-- R11 as a unique key: one row per service license, keyed by member and
-- product.  The license guard inserts it with ON CONFLICT DO NOTHING, so a
-- member's second service license of a product, even one written at the
-- same moment by another session, is refused by the index itself.
CREATE TABLE subscription.service_seat (
    member_id       bigint NOT NULL,
    product         text NOT NULL,
    subscription_id bigint NOT NULL,
    tenant_id       bigint NOT NULL,
    CONSTRAINT service_seat_pkey PRIMARY KEY (tenant_id, member_id, product)
);
CREATE INDEX ON subscription.service_seat (member_id, product);

COMMENT ON TABLE subscription.service_seat IS 'R11 as a key: one service license per member and product';
