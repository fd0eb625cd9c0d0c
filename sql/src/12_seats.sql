-- Seats (Z4, R2, R10, R11, R12): the licenses of a subscription held by
-- members, the counter that serializes their writes, and the service seat
-- key of R11.  The guard that keeps them is in 31_seats.sql.

CREATE TABLE subscription.license (
    subscription_id bigint NOT NULL REFERENCES subscription.subscription (id),
    -- cascade: a seat is what its member holds; deleting the member releases
    -- it as license_release() would (the guard counts it, history records it)
    member_id       bigint NOT NULL REFERENCES subscription.member (id) ON DELETE CASCADE,
    assigned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, member_id)
);
CREATE INDEX ON subscription.license (member_id);

COMMENT ON TABLE subscription.license IS 'Seats of a subscription held by members; guarded on every write path (Z4, R11)';

-- The seat counter of a subscription: the row that serializes its license
-- writes.  Every write of subscription.license moves "used" by one locked
-- UPDATE per subscription and statement, never past "capacity" (quantity
-- plus the license units of active add-on batches): that is the invariant,
-- and the CHECK keeps it whatever path writes.
CREATE TABLE subscription.license_counter (
    -- cascade: derived data, the count of the subscription's license rows
    subscription_id bigint PRIMARY KEY
                    REFERENCES subscription.subscription (id) ON DELETE CASCADE,
    used            integer NOT NULL DEFAULT 0,
    capacity        integer NOT NULL,
    active          boolean NOT NULL,
    CONSTRAINT license_counter_within_capacity CHECK (used >= 0 AND used <= capacity)
);

COMMENT ON TABLE subscription.license_counter IS 'The seat counter of a subscription: used never exceeds capacity';

-- R11 as a unique key: one row per service license, keyed by member and
-- product.  The license guard inserts it with ON CONFLICT DO NOTHING, so a
-- member's second service license of a product, even one written at the
-- same moment by another session, is refused by the index itself.
CREATE TABLE subscription.service_seat (
    member_id       bigint NOT NULL,
    product         text NOT NULL,
    subscription_id bigint NOT NULL,
    PRIMARY KEY (member_id, product)
);

COMMENT ON TABLE subscription.service_seat IS 'R11 as a key: one service license per member and product';
