-- Who acts: database roles are the boundary (security model, README).
-- The roles set up by grant_application() and grant_backoffice()
-- (70_rights.sql).

-- The roles given grant_application() or grant_backoffice().  An empty
-- subscription.actor is trusted only for the back-office ones.
CREATE TABLE subscription.granted_role (
    role       regrole NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('application', 'backoffice')),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, kind)
);

COMMENT ON TABLE subscription.granted_role IS
'Roles set up by grant_application() and grant_backoffice(); back-office roles are trusted without an actor';
