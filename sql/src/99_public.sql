-- Last, once every function and procedure exists: what PUBLIC may run.

-- PUBLIC executes nothing: every function is granted by a decision above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA subscription FROM PUBLIC;
