/*-------------------------------------------------------------------------
 *
 * licenses.c
 *	  Seats: the guard of subscription.license and the functions that
 *	  assign and release licenses (Z4, R2, R10, R11, R12).
 *
 * Locking design.  Each subscription has one counter row
 * (subscription.license_counter); every statement that writes licenses
 * moves it once, by a conditional UPDATE that can only succeed while
 * used + delta <= capacity, taking the counters in subscription order so
 * that two statements cannot deadlock.  Concurrent writers of the same
 * subscription queue on that row and each re-checks the condition against
 * the latest committed version, so no interleaving can oversell.  The
 * guard reads with the latest snapshot, as ri_triggers.c does, so under
 * REPEATABLE READ too a waiter gets the true answer (a seat, or 23514)
 * rather than a serialization failure.
 *
 * R11 (one service license per member and product) spans subscriptions of
 * one account, so a statement that assigns licenses first locks the
 * accounts concerned, in id order, and only then looks for a second service
 * license, with the latest snapshot as ri_triggers.c does: whatever
 * committed before the lock was granted is seen, whatever comes after waits
 * for us.  One row lock per account, not per member, keeps a bulk import
 * cheap; it serializes an account's assignments, which its counters mostly
 * do already.  The search is skipped when the account has no other service
 * subscription of the product, the common case.
 *
 * The guard is a statement-level trigger over the transition tables: a
 * bulk INSERT ... SELECT or COPY costs a few set-based queries, not work
 * per row, and fails as a whole.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(license_guard);
PG_FUNCTION_INFO_V1(license_consume);
PG_FUNCTION_INFO_V1(license_release);
PG_FUNCTION_INFO_V1(licenses_left);

/* INSERT, UPDATE, DELETE: the GuardedEvent values that carry rows */
#define GUARD_NUM_EVENTS 3

/*
 * The statement's net change per (subscription, member): d = 1 assigned,
 * d = -1 released.  An UPDATE that keeps both columns changes nothing.
 */
static const char *const guard_changes[GUARD_NUM_EVENTS] = {
	"(SELECT subscription_id, member_id, 1 AS d FROM new_rows)",
	"(SELECT subscription_id, member_id, sum(d)::int AS d"
	"   FROM (SELECT subscription_id, member_id, 1 AS d FROM new_rows"
	"         UNION ALL"
	"         SELECT subscription_id, member_id, -1 FROM old_rows) AS u"
	"  GROUP BY 1, 2 HAVING sum(d) <> 0)",
	"(SELECT subscription_id, member_id, -1 AS d FROM old_rows)"
};

typedef enum GuardQuery
{
	GQ_LOCK_ACCOUNTS,			/* lock the accounts that get service licenses */
	GQ_SUMMARY,					/* history, and per subscription the net change */
	GQ_SECOND_SERVICE,			/* a member's second service license (R11) */
	GUARD_NUM_QUERIES
} GuardQuery;

/*
 * Aggregations run on the transition table alone before any join, so that
 * a bulk statement sorts or hashes two columns, not joined rows.
 */
static const char *const guard_queries[GUARD_NUM_QUERIES] = {
	"SELECT a.id FROM subscription.account AS a"
	" WHERE a.id IN (SELECT s.account_id"
	"                  FROM (SELECT DISTINCT subscription_id FROM %1$s AS c WHERE c.d > 0) AS c"
	"                  JOIN subscription.subscription AS s ON s.id = c.subscription_id"
	"                  JOIN subscription.plan AS p ON p.code = s.plan AND p.kind = 'service')"
	" ORDER BY a.id FOR NO KEY UPDATE OF a",

	/*
	 * One statement for the rest of the reading and the history: one row
	 * per subscription in id order with its net change; whether R11 is worth
	 * checking (the account has another service subscription of the same
	 * product); and, the same in every row, an assigned member of another
	 * account (22023).  The history rows are written here too: should a
	 * check fail, the statement rolls back with them.
	 */
	"WITH history AS ("
	"  INSERT INTO subscription.history (actor, operation, account_id, subscription_id, details)"
	"  SELECT subscription.current_actor(),"
	"         CASE WHEN x.assigned THEN 'license_assign' ELSE 'license_release' END,"
	"         s.account_id, x.subscription_id, jsonb_build_object('members', x.members)"
	"    FROM (SELECT c.subscription_id, c.d > 0 AS assigned,"
	"                 jsonb_agg(c.member_id ORDER BY c.member_id) AS members"
	"            FROM %1$s AS c GROUP BY 1, 2) AS x"
	"    JOIN subscription.subscription AS s ON s.id = x.subscription_id)"
	" SELECT d.subscription_id, d.delta,"
	"        p.kind = 'service' AND d.assigned AND EXISTS ("
	"            SELECT FROM subscription.subscription AS s2"
	"              JOIN subscription.plan AS p2 ON p2.code = s2.plan"
	"             WHERE s2.account_id = s.account_id AND s2.id <> s.id"
	"               AND p2.product = p.product AND p2.kind = 'service'),"
	"        f.subscription_id, f.member_id"
	"   FROM (SELECT c.subscription_id, sum(c.d)::int AS delta, bool_or(c.d > 0) AS assigned"
	"           FROM %1$s AS c GROUP BY 1) AS d"
	"   JOIN subscription.subscription AS s ON s.id = d.subscription_id"
	"   JOIN subscription.plan AS p ON p.code = s.plan"
	"   LEFT JOIN (SELECT c.subscription_id, c.member_id"
	"                FROM %1$s AS c"
	"                JOIN subscription.subscription AS s ON s.id = c.subscription_id"
	"                LEFT JOIN subscription.member AS m ON m.id = c.member_id"
	"               WHERE c.d > 0 AND m.account_id IS DISTINCT FROM s.account_id"
	"               LIMIT 1) AS f ON true"
	"  ORDER BY d.subscription_id",

	"SELECT c.member_id, p.product, l.subscription_id"
	"  FROM %1$s AS c"
	"  JOIN subscription.subscription AS s ON s.id = c.subscription_id"
	"  JOIN subscription.plan AS p ON p.code = s.plan AND p.kind = 'service'"
	"  JOIN subscription.license AS l"
	"    ON l.member_id = c.member_id AND l.subscription_id <> c.subscription_id"
	"  JOIN subscription.subscription AS s2 ON s2.id = l.subscription_id"
	"  JOIN subscription.plan AS p2"
	"    ON p2.code = s2.plan AND p2.product = p.product AND p2.kind = 'service'"
	" WHERE c.d > 0"
	" ORDER BY c.member_id, c.subscription_id, l.subscription_id"
	" LIMIT 1"
};

/* kept plans, prepared on first use; the catalog they read is the extension's own */
static SPIPlanPtr guard_plans[GUARD_NUM_EVENTS][GUARD_NUM_QUERIES];
static SPIPlanPtr move_counter_plan = NULL;
static SPIPlanPtr read_counter_plan = NULL;
static SPIPlanPtr truncate_plan = NULL;
static SPIPlanPtr precheck_plan = NULL;
static SPIPlanPtr authorize_plan = NULL;
static SPIPlanPtr insert_license_plan = NULL;
static SPIPlanPtr delete_license_plan = NULL;

/*
 * Licenses left after the last guarded statement, when it changed exactly
 * one subscription: license_consume and license_release return it without
 * another query.
 */
static int64 last_guarded_subscription = 0;

/*
 * What license_consume has already checked, with the account locked, for
 * the one row it is about to insert: the guard then goes straight to the
 * counter.  Valid only in the same (sub)transaction, and used once.
 */
typedef struct CheckedLicense
{
	LocalTransactionId lxid;
	SubTransactionId subxid;
	int64		subscription_id;
	int64		member_id;
} CheckedLicense;

static CheckedLicense checked_license;
static int32 last_licenses_left = 0;

static int64
GetInt64(int row, int col, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
									   col, isnull));
}

/*
 * Say why a subscription's counter could not move by delta (> 0).
 */
static void
CounterRefusal(Relation rel, int64 subscription_id, int32 delta)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subscription_id)};
	bool		isnull;
	int64		used;
	int64		capacity;
	bool		active;

	KeptPlan(&read_counter_plan,
			 "SELECT used, capacity, active FROM subscription.license_counter"
			 " WHERE subscription_id = $1",
			 1, argtypes);
	if (SPI_execute_plan(read_counter_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the license counter of subscription " INT64_FORMAT,
			 subscription_id);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id),
				 errtable(rel)));
	used = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	capacity = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	if (!active)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription " INT64_FORMAT " is not active", subscription_id),
				 errdetail("Licenses are assigned only on active subscriptions."),
				 errtable(rel)));
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("subscription " INT64_FORMAT " has no license left", subscription_id),
			 errdetail("Limit " INT64_FORMAT ", in use " INT64_FORMAT ", requested %d.",
					   capacity, used, delta),
			 errhint("Raise the quantity with subscription.set_quantity(), buy a license add-on, or release a license."),
			 errtable(rel)));
}

/*
 * Move one subscription's counter by delta, or refuse.  Called for each
 * subscription of a statement in ascending id order.
 */
static void
MoveCounter(Relation rel, int64 subscription_id, int32 delta)
{
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(subscription_id), Int32GetDatum(delta)};
	bool		isnull;

	KeptPlan(&move_counter_plan,
			 "UPDATE subscription.license_counter"
			 "   SET used = used + $2"
			 " WHERE subscription_id = $1"
			 "   AND ($2 < 0 OR (active AND used + $2 <= capacity))"
			 " RETURNING capacity - used",
			 2, argtypes);
	if (SPI_execute_snapshot(move_counter_plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not move the license counter of subscription " INT64_FORMAT,
			 subscription_id);
	if (SPI_processed == 1)
	{
		last_guarded_subscription = subscription_id;
		last_licenses_left = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1, &isnull));
	}
	/*
	 * A release always matches a counter that still exists; none matched, so
	 * the subscription is being deleted together with its licenses.
	 */
	else if (delta > 0)
		CounterRefusal(rel, subscription_id, delta);
}

static void
GuardTruncate(void)
{
	KeptPlan(&truncate_plan,
			 "WITH reset AS (UPDATE subscription.license_counter SET used = 0 WHERE used <> 0"
			 "               RETURNING subscription_id)"
			 " INSERT INTO subscription.history (actor, operation, account_id, subscription_id, details)"
			 " SELECT subscription.current_actor(), 'license_truncate', s.account_id, s.id, '{}'"
			 "   FROM reset JOIN subscription.subscription AS s ON s.id = reset.subscription_id",
			 0, NULL);
	if (SPI_execute_plan(truncate_plan, NULL, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not reset the license counters");
}

static void
ForeignMemberError(Relation rel, int64 subscription_id, int64 member_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("member " INT64_FORMAT " does not belong to the account of subscription " INT64_FORMAT,
					member_id, subscription_id),
			 errhint("A license goes to a member of the subscription's own account."),
			 errtable(rel)));
}

static void
GuardStatement(TriggerData *trigdata, GuardedEvent event)
{
	Relation	rel = trigdata->tg_relation;
	SPIPlanPtr *plans = guard_plans[event];
	Snapshot	latest;
	int			q;
	uint64		i;
	uint64		nsubscriptions;
	int64	   *subscriptions;
	int32	   *deltas;
	bool		check_r11 = false;
	bool		isnull;

	for (q = 0; q < GUARD_NUM_QUERIES; q++)
		if (plans[q] == NULL)
			KeptPlan(&plans[q], psprintf(guard_queries[q], guard_changes[event]), 0, NULL);

	if (event != GUARDED_DELETE &&
		SPI_execute_plan(plans[GQ_LOCK_ACCOUNTS], NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the accounts of new licenses");

	/* latest snapshot: see what committed while we waited for the locks */
	latest = GetLatestSnapshot();
	if (SPI_execute_snapshot(plans[GQ_SUMMARY], NULL, NULL,
							 latest, InvalidSnapshot, false, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not summarize the license changes");

	/* copy out: the queries below replace SPI_tuptable */
	nsubscriptions = SPI_processed;
	subscriptions = palloc(sizeof(int64) * Max(nsubscriptions, 1));
	deltas = palloc(sizeof(int32) * Max(nsubscriptions, 1));
	for (i = 0; i < nsubscriptions; i++)
	{
		bool		no_foreign_member;
		int64		foreign_member = GetInt64(i, 5, &no_foreign_member);

		if (!no_foreign_member)
			ForeignMemberError(rel, GetInt64(i, 4, &isnull), foreign_member);
		subscriptions[i] = GetInt64(i, 1, &isnull);
		deltas[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull)))
			check_r11 = true;
	}

	if (check_r11)
	{
		if (SPI_execute_snapshot(plans[GQ_SECOND_SERVICE], NULL, NULL, latest, InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the service licenses");
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("member " INT64_FORMAT " already holds a service license of product \"%s\"",
							GetInt64(0, 1, &isnull),
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
					 errdetail("The member holds a license of subscription " INT64_FORMAT
							   "; a member holds at most one service per product.",
							   GetInt64(0, 3, &isnull)),
					 errhint("Release that license first, or assign an option plan instead."),
					 errtable(rel)));
	}

	last_guarded_subscription = 0;
	for (i = 0; i < nsubscriptions; i++)
		if (deltas[i] != 0)
			MoveCounter(rel, subscriptions[i], deltas[i]);
	if (nsubscriptions != 1)
		last_guarded_subscription = 0;
}

/*
 * The same checks for a statement that changes one row (license_consume,
 * license_release, a single INSERT or DELETE): with the ids in hand, two
 * short parameterized statements instead of scans of the transition table.
 */
static void
GuardOneRow(Relation rel, Tuplestorestate *rows, bool assigning)
{
	static SPIPlanPtr one_check_plan = NULL;
	static SPIPlanPtr one_move_plan = NULL;
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TupleTableSlot *slot;
	Oid			argtypes[3] = {INT8OID, INT8OID, INT4OID};
	Datum		values[3];
	int64		subscription_id;
	int64		member_id;
	bool		isnull;
	bool		not_moved;
	bool		no_conflict;

	slot = OnlyTransitionRow(rows, tupdesc);
	subscription_id = DatumGetInt64(slot_getattr(slot, SPI_fnumber(tupdesc, "subscription_id"), &isnull));
	member_id = DatumGetInt64(slot_getattr(slot, SPI_fnumber(tupdesc, "member_id"), &isnull));
	ExecDropSingleTupleTableSlot(slot);

	values[0] = Int64GetDatum(subscription_id);
	values[1] = Int64GetDatum(member_id);
	values[2] = Int32GetDatum(assigning ? 1 : -1);

	/* license_consume has done this already, in this very subtransaction */
	if (assigning && !(checked_license.lxid == MyProc->lxid &&
					   checked_license.subxid == GetCurrentSubTransactionId() &&
					   checked_license.subscription_id == subscription_id &&
					   checked_license.member_id == member_id))
	{
		int64		account;
		int64		member_account;
		bool		no_member;

		KeptPlan(&one_check_plan,
				 "SELECT s.account_id, m.account_id"
				 "  FROM subscription.subscription AS s"
				 "  JOIN subscription.account AS a ON a.id = s.account_id"
				 "  LEFT JOIN subscription.member AS m ON m.id = $2"
				 " WHERE s.id = $1"
				 "   FOR NO KEY UPDATE OF a",
				 2, argtypes);
		if (SPI_execute_plan(one_check_plan, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the new license");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id),
					 errtable(rel)));
		account = GetInt64(0, 1, &isnull);
		member_account = GetInt64(0, 2, &no_member);
		if (no_member || member_account != account)
			ForeignMemberError(rel, subscription_id, member_id);
	}
	checked_license.lxid = InvalidLocalTransactionId;

	/*
	 * After the account lock, with the latest snapshot: a second service
	 * license of the product (R11), else the counter move and the history.
	 */
	KeptPlan(&one_move_plan,
			 "WITH conflict AS ("
			 "  SELECT l.subscription_id, p.product"
			 "    FROM subscription.subscription AS s"
			 "    JOIN subscription.plan AS p ON p.code = s.plan AND p.kind = 'service'"
			 "    JOIN subscription.license AS l ON l.member_id = $2 AND l.subscription_id <> $1"
			 "    JOIN subscription.subscription AS s2 ON s2.id = l.subscription_id"
			 "    JOIN subscription.plan AS p2"
			 "      ON p2.code = s2.plan AND p2.product = p.product AND p2.kind = 'service'"
			 "   WHERE $3 > 0 AND s.id = $1"
			 "   ORDER BY l.subscription_id LIMIT 1),"
			 " moved AS ("
			 "  UPDATE subscription.license_counter SET used = used + $3"
			 "   WHERE subscription_id = $1 AND NOT EXISTS (SELECT FROM conflict)"
			 "     AND ($3 < 0 OR (active AND used + $3 <= capacity))"
			 "  RETURNING capacity - used AS licenses_left),"
			 " history AS ("
			 "  INSERT INTO subscription.history (actor, operation, account_id, subscription_id, details)"
			 "  SELECT subscription.current_actor(),"
			 "         CASE WHEN $3 > 0 THEN 'license_assign' ELSE 'license_release' END,"
			 "         s.account_id, $1, jsonb_build_object('members', jsonb_build_array($2))"
			 "    FROM moved, subscription.subscription AS s WHERE s.id = $1)"
			 " SELECT (SELECT licenses_left FROM moved), c.subscription_id, c.product"
			 "   FROM (SELECT) AS one LEFT JOIN conflict AS c ON true",
			 3, argtypes);
	if (SPI_execute_snapshot(one_move_plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not move the license counter of subscription " INT64_FORMAT,
			 subscription_id);

	last_licenses_left = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													 1, &not_moved));
	if (!not_moved)
	{
		last_guarded_subscription = subscription_id;
		return;
	}
	last_guarded_subscription = 0;
	if (!assigning)
		return;					/* the subscription is being deleted with its licenses */

	(void) GetInt64(0, 2, &no_conflict);
	if (!no_conflict)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("member " INT64_FORMAT " already holds a service license of product \"%s\"",
						member_id, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
				 errdetail("The member holds a license of subscription " INT64_FORMAT
						   "; a member holds at most one service per product.",
						   GetInt64(0, 2, &isnull)),
				 errhint("Release that license first, or assign an option plan instead."),
				 errtable(rel)));
	CounterRefusal(rel, subscription_id, 1);
}

/*
 * license_guard: AFTER ... FOR EACH STATEMENT trigger of subscription.license
 */
Datum
license_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Tuplestorestate *rows;
	GuardedEvent event;
	bool		one_row = false;
	Oid			save_userid;
	int			save_sec_context;
	int			nest_level;

	event = ClassifyGuardedStatement(fcinfo, "license_guard", &rows);
	trigdata = (TriggerData *) fcinfo->context;
	if (strcmp(RelationGetRelationName(trigdata->tg_relation), "license") != 0 ||
		strcmp(get_namespace_name(RelationGetNamespace(trigdata->tg_relation)), "subscription") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("license_guard() guards subscription.license only")));
	if (rows != NULL)
	{
		if (tuplestore_tuple_count(rows) == 0)
			return PointerGetDatum(NULL);
		/* an UPDATE may move one row between two subscriptions */
		one_row = event != GUARDED_UPDATE && tuplestore_tuple_count(rows) == 1;
	}

	/* like ri_triggers.c: the checks see every row, whatever RLS says */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(RelationGetForm(trigdata->tg_relation)->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	nest_level = PinSearchPath();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (event == GUARDED_TRUNCATE)
		GuardTruncate();
	else
	{
		if (one_row)
			GuardOneRow(trigdata->tg_relation, rows, event == GUARDED_INSERT);
		else
		{
			if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
				elog(ERROR, "could not register the transition tables");
			GuardStatement(trigdata, event);
		}
	}
	SPI_finish();

	UnpinSearchPath(nest_level);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	return PointerGetDatum(NULL);
}

/* subscription.authorize(), when an actor is set (R9, Z1, K8) */
static void
Authorize(int64 account_id, const char *action)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];

	if (subscription_actor == NULL || subscription_actor[0] == '\0')
		return;
	values[0] = Int64GetDatum(account_id);
	values[1] = CStringGetTextDatum(action);
	KeptPlan(&authorize_plan, "SELECT subscription.authorize($1, $2)", 2, argtypes);
	if (SPI_execute_plan(authorize_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the actor's rights");
}

/*
 * The checks of license_consume and license_release that give the caller a
 * precise error before any write: unknown ids, the actor's rights, another
 * account, the subscription's state.  The guard checks again under locks.
 */
static void
PrecheckLicense(const char *fn, int64 subscription_id, int64 member_id, bool assigning)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(subscription_id), Int64GetDatum(member_id)};
	bool		sub_missing;
	bool		member_missing;
	bool		isnull;
	int64		account;
	int64		member_account;
	char	   *status;
	bool		holds;

	KeptPlan(&precheck_plan,
			 "SELECT s.account_id, m.account_id, s.status,"
			 "       EXISTS (SELECT FROM subscription.license AS l"
			 "                WHERE l.subscription_id = $1 AND l.member_id = $2)"
			 "  FROM subscription.subscription AS s"
			 "  LEFT JOIN subscription.member AS m ON m.id = $2"
			 " WHERE s.id = $1",
			 2, argtypes);
	if (SPI_execute_plan(precheck_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up subscription " INT64_FORMAT, subscription_id);

	sub_missing = SPI_processed == 0;
	if (sub_missing)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id)));
	account = GetInt64(0, 1, &isnull);
	member_account = GetInt64(0, 2, &member_missing);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	holds = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));

	/* nothing more is told to an actor who may not do this */
	Authorize(account, "assign_licenses");

	if (member_missing)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("member " INT64_FORMAT " does not exist", member_id)));
	if (member_account != account)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member " INT64_FORMAT " does not belong to the account of subscription " INT64_FORMAT,
						member_id, subscription_id),
				 errdetail("The member belongs to account " INT64_FORMAT ", the subscription to account " INT64_FORMAT ".",
						   member_account, account)));
	if (assigning && strcmp(status, "active") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription " INT64_FORMAT " is %s", subscription_id, status),
				 errdetail("Licenses are assigned only on active subscriptions.")));
	if (assigning && holds)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("member " INT64_FORMAT " already holds a license of subscription " INT64_FORMAT,
						member_id, subscription_id)));
	if (!assigning && !holds)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("member " INT64_FORMAT " holds no license of subscription " INT64_FORMAT,
						member_id, subscription_id),
				 errhint("%s() releases only assigned licenses.", fn)));
}

/* assign (or release) through a plain INSERT (DELETE): the guard does the rest */
static int32
WriteLicense(const char *fn, bool assigning, FunctionCallInfo fcinfo)
{
	int64		subscription_id;
	int64		member_id;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2];
	int			nest_level;
	int32		left;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s() must not be null",
						PG_ARGISNULL(0) ? "subscription_id" : "member_id", fn)));
	subscription_id = PG_GETARG_INT64(0);
	member_id = PG_GETARG_INT64(1);
	values[0] = Int64GetDatum(subscription_id);
	values[1] = Int64GetDatum(member_id);

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* with an actor, the rights come first; otherwise a refusal is explained after */
	if (subscription_actor != NULL && subscription_actor[0] != '\0')
		PrecheckLicense(fn, subscription_id, member_id, assigning);

	last_guarded_subscription = 0;
	if (assigning)
	{
		/*
		 * One statement locks the account, checks the member's account, the
		 * state and a license already held, and inserts; the guard, told so,
		 * goes straight to R11 and the counter.
		 */
		checked_license.lxid = MyProc->lxid;
		checked_license.subxid = GetCurrentSubTransactionId();
		checked_license.subscription_id = subscription_id;
		checked_license.member_id = member_id;
		KeptPlan(&insert_license_plan,
				 "WITH target AS ("
				 "  SELECT s.account_id, s.status, m.account_id AS member_account,"
				 "         EXISTS (SELECT FROM subscription.license AS l"
				 "                  WHERE l.subscription_id = $1 AND l.member_id = $2) AS holds"
				 "    FROM subscription.subscription AS s"
				 "    JOIN subscription.account AS a ON a.id = s.account_id"
				 "    LEFT JOIN subscription.member AS m ON m.id = $2"
				 "   WHERE s.id = $1"
				 "     FOR NO KEY UPDATE OF a)"
				 " INSERT INTO subscription.license (subscription_id, member_id)"
				 " SELECT $1, $2 FROM target"
				 "  WHERE target.status = 'active' AND target.member_account = target.account_id"
				 "    AND NOT target.holds",
				 2, argtypes);
		if (SPI_execute_plan(insert_license_plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not assign the license");
		checked_license.lxid = InvalidLocalTransactionId;
		if (SPI_processed == 0)
		{
			PrecheckLicense(fn, subscription_id, member_id, assigning);
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("subscription " INT64_FORMAT " changed while its license was being assigned",
							subscription_id),
					 errhint("Retry the transaction.")));
		}
	}
	else
	{
		KeptPlan(&delete_license_plan,
				 "DELETE FROM subscription.license WHERE subscription_id = $1 AND member_id = $2",
				 2, argtypes);
		if (SPI_execute_plan(delete_license_plan, values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not release the license");
		if (SPI_processed == 0)
		{
			PrecheckLicense(fn, subscription_id, member_id, assigning);
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("subscription " INT64_FORMAT " changed while its license was being released",
							subscription_id),
					 errhint("Retry the transaction.")));
		}
	}

	if (last_guarded_subscription != subscription_id)
		elog(ERROR, "the license guard did not count subscription " INT64_FORMAT, subscription_id);
	left = last_licenses_left;

	SPI_finish();
	UnpinSearchPath(nest_level);
	return left;
}

/*
 * license_consume(subscription_id bigint, member_id bigint) returns int
 */
Datum
license_consume(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(WriteLicense("license_consume", true, fcinfo));
}

/*
 * license_release(subscription_id bigint, member_id bigint) returns int
 */
Datum
license_release(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(WriteLicense("license_release", false, fcinfo));
}

/*
 * licenses_left(subscription_id bigint) returns int
 */
Datum
licenses_left(PG_FUNCTION_ARGS)
{
	int64		subscription_id = PG_GETARG_INT64(0);
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(subscription_id)};
	bool		isnull;
	int64		used;
	int64		capacity;
	int			nest_level;

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	KeptPlan(&read_counter_plan,
			 "SELECT used, capacity, active FROM subscription.license_counter"
			 " WHERE subscription_id = $1",
			 1, argtypes);
	if (SPI_execute_plan(read_counter_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the license counter");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id)));
	used = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	capacity = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();
	UnpinSearchPath(nest_level);

	PG_RETURN_INT32((int32) (capacity - used));
}
