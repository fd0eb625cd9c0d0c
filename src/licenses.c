/*-------------------------------------------------------------------------
 *
 * licenses.c
 *	  Seats: the guard of subscription.license and the functions that
 *	  assign and release licenses (Z4, R2, R10, R11, R12).
 *
 * Locking design.  Each subscription has one counter row
 * (subscription.license_counter); every statement that writes licenses
 * moves it once: it locks the row's latest version and moves it only
 * while used + delta <= capacity (MoveCounterRow), taking the counters in
 * subscription order so that two statements cannot deadlock.  Concurrent
 * writers of the same subscription queue on that row lock and each checks
 * the condition on the latest committed version, so no interleaving can
 * oversell; the row's CHECK holds the same line on every other path.  The
 * guard reads with the latest snapshot, as ri_triggers.c does; under
 * REPEATABLE READ a writer that waited for another gets a serialization
 * failure, as for any row changed under it.
 *
 * R11 (one service license per member and product) is a unique key: each
 * service license has its row in subscription.service_seat, keyed by member
 * and product, which the guard inserts.  A second service license of the
 * member waits on the index entry of the first, as any duplicate key does,
 * and is refused once the first commits; no lock wider than that entry is
 * taken, so assignments to one account, or to one member's options, run
 * side by side.  One row takes its seat by a speculative insertion, as ON
 * CONFLICT DO NOTHING does; a bulk statement with a plain INSERT in a
 * subtransaction, which is cheaper per row, and looks for the culprit only
 * when the key refuses.
 *
 * The guard is a statement-level trigger over the transition tables: a
 * bulk INSERT ... SELECT or COPY costs a few set-based queries, not work
 * per row, and fails as a whole.  A statement of one row costs a few index
 * lookups and row writes instead (rowwrite.c), no query.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(license_guard);
PG_FUNCTION_INFO_V1(license_consume);
PG_FUNCTION_INFO_V1(license_release);
PG_FUNCTION_INFO_V1(licenses_left);
PG_FUNCTION_INFO_V1(reseat_licenses);
PG_FUNCTION_INFO_V1(seat_product);

/* INSERT, UPDATE, DELETE: the GuardedEvent values that carry rows */
#define GUARD_NUM_EVENTS 3

/*
 * The statement's net change per (subscription, member): d = 1 assigned,
 * d = -1 released.  An UPDATE that keeps both columns changes nothing.
 * KEY: columns before them, "tenant_id, " for the statement path on a
 * Citus shard (tenant_changes), none for GuardStatement() (a 1.0 schema
 * has no tenant_id).
 */
#define LICENSE_CHANGES(KEY) { \
	"(SELECT " KEY "subscription_id, member_id, 1 AS d FROM new_rows)", \
	"(SELECT " KEY "subscription_id, member_id, sum(d)::int AS d" \
	"   FROM (SELECT " KEY "subscription_id, member_id, 1 AS d FROM new_rows" \
	"         UNION ALL" \
	"         SELECT " KEY "subscription_id, member_id, -1 FROM old_rows) AS u" \
	"  GROUP BY " KEY "subscription_id, member_id HAVING sum(d) <> 0)", \
	"(SELECT " KEY "subscription_id, member_id, -1 AS d FROM old_rows)" \
}
static const char *const guard_changes[GUARD_NUM_EVENTS] = LICENSE_CHANGES("");
static const char *const tenant_changes[GUARD_NUM_EVENTS] = LICENSE_CHANGES("tenant_id, ");

typedef enum GuardQuery
{
	GQ_SUMMARY,					/* per subscription the net change */
	GQ_HISTORY,					/* the history rows to write */
	GQ_UNSEAT,					/* free the service seats of released licenses */
	GQ_SEAT,					/* take the service seats of assigned licenses (R11) */
	GQ_SEAT_CONFLICT,			/* why GQ_SEAT failed */
	GUARD_NUM_QUERIES
} GuardQuery;

/* the statement's changes that a query applies to */
static const bool guard_query_applies[GUARD_NUM_EVENTS][GUARD_NUM_QUERIES] = {
	[GUARDED_INSERT] = {true, true, false, true, true},
	[GUARDED_UPDATE] = {true, true, true, true, true},
	[GUARDED_DELETE] = {true, true, true, false, false}
};

/*
 * R11: a plan of kind SEAT_KIND takes a seat of its product, one per member;
 * an option takes none.  Said here once: WANTED_SEATS (the statement guard
 * and reseat_licenses()), ReadTarget() (the one-row path) and, through
 * seat_product(), the SQL trigger sync_service_seats() all use it.
 */
#define SEAT_KIND "service"

/* whether a plan of this kind takes a seat of its product (R11) */
static inline bool
PlanTakesSeat(const char *kind)
{
	return strcmp(kind, SEAT_KIND) == 0;
}

/*
 * Z3: a service license of a suite takes the seat of its own product and
 * one of the product of each plan the suite includes (subscription.
 * suite_component), so that R11 holds per product through the same key.
 * The products a license of plan p seats, for WANTED_SEATS (its %2$s, see
 * SeatProducts()); ReadTarget() reads the same rows by their keys.
 */
#define SUITE_SEAT_PRODUCTS \
	"SELECT p.product" \
	" UNION ALL" \
	" SELECT ip.product FROM subscription.suite_component AS sc" \
	"   JOIN subscription.plan AS ip ON ip.code = sc.plan" \
	"  WHERE sc.suite_plan = p.code"

/* the table of Z3, or InvalidOid in a database still at version 1.0 */
static Oid
SuiteComponentTable(void)
{
	return get_relname_relid("suite_component", get_namespace_oid("subscription", false));
}

/* the products a service license of plan p seats, for WANTED_SEATS */
static const char *
SeatProducts(void)
{
	return OidIsValid(SuiteComponentTable()) ? SUITE_SEAT_PRODUCTS : "SELECT p.product";
}

/*
 * The service seats that the assigned licenses of %1$s take, in key order.
 * A plain INSERT of them fails on the seat's key when a member would hold a
 * second service of a product: SeatsOrRefuse() turns that into R11's error,
 * found by SEAT_CONFLICT_QUERY.  Shared by the guard and reseat_licenses().
 * The guard's statement names no tenant (SEAT_QUERY); reseat_licenses()
 * rebuilds one tenant's seats at a time, its tenant_id = $2 named for every
 * tenant table it reads and writes (TENANT_SEAT_QUERY), so that on Citus
 * each statement is a router query on the tenant's shards (issue 17).
 */
#define WANTED_SEATS_OF(KEY, TENANT) \
	"SELECT c.member_id, sp.product, c.subscription_id" KEY \
	"  FROM %1$s AS c" \
	"  JOIN subscription.subscription AS s ON " TENANT "s.id = c.subscription_id" \
	"  JOIN subscription.plan AS p ON p.code = s.plan AND p.kind = '" SEAT_KIND "'" \
	"  CROSS JOIN LATERAL (%2$s) AS sp (product)" \
	" WHERE c.d > 0"
#define SEAT_QUERY_OF(KEYCOL, KEY, TENANT) \
	"INSERT INTO subscription.service_seat (member_id, product, subscription_id" KEYCOL ") " \
	WANTED_SEATS_OF(KEY, TENANT) " ORDER BY 1, 3"
/* the first refused license: its seat is held, or wanted twice by the statement */
#define SEAT_CONFLICT_QUERY_OF(KEY, TENANT, SEAT_TENANT) \
	"WITH wanted AS (" WANTED_SEATS_OF(KEY, TENANT) ")" \
	" SELECT w.member_id, w.product, w.subscription_id FROM wanted AS w" \
	"  WHERE EXISTS (SELECT FROM subscription.service_seat AS x" \
	"                 WHERE " SEAT_TENANT "x.member_id = w.member_id AND x.product = w.product" \
	"                   AND x.subscription_id <> w.subscription_id)" \
	"     OR EXISTS (SELECT FROM wanted AS v" \
	"                 WHERE v.member_id = w.member_id AND v.product = w.product" \
	"                   AND v.subscription_id < w.subscription_id)" \
	"  ORDER BY 1, 3 LIMIT 1"
#define SEAT_QUERY SEAT_QUERY_OF("", "", "")
#define SEAT_CONFLICT_QUERY SEAT_CONFLICT_QUERY_OF("", "", "")
/* one tenant's: its tenant_id = $2 */
#define TENANT_SEAT_QUERY SEAT_QUERY_OF(", tenant_id", ", c.tenant_id", "s.tenant_id = $2 AND ")
#define TENANT_SEAT_CONFLICT_QUERY SEAT_CONFLICT_QUERY_OF("", "s.tenant_id = $2 AND ", "x.tenant_id = $2 AND ")

/*
 * Aggregations run on the transition table alone before any join, so that
 * a bulk statement sorts or hashes two columns, not joined rows.
 */
static const char *const guard_queries[GUARD_NUM_QUERIES] = {
	/* one row per subscription in id order with its net change */
	"SELECT c.subscription_id, sum(c.d)::int AS delta"
	"  FROM %1$s AS c GROUP BY 1"
	" ORDER BY 1",

	/*
	 * The history rows, one per subscription and direction: the members
	 * assigned or released, written by RecordHistory().  Should a check
	 * fail, the statement rolls back with them.
	 */
	"SELECT CASE WHEN x.assigned THEN 'license_assign' ELSE 'license_release' END,"
	"       s.account_id, x.subscription_id, jsonb_build_object('members', x.members), %2$s"
	"  FROM (SELECT c.subscription_id, c.d > 0 AS assigned,"
	"               jsonb_agg(c.member_id ORDER BY c.member_id) AS members"
	"          FROM %1$s AS c GROUP BY 1, 2) AS x"
	"  JOIN subscription.subscription AS s ON s.id = x.subscription_id"
	" ORDER BY x.subscription_id, x.assigned",

	"DELETE FROM subscription.service_seat AS x"
	" USING %1$s AS c"
	" WHERE c.d < 0 AND x.member_id = c.member_id AND x.subscription_id = c.subscription_id",

	SEAT_QUERY,

	SEAT_CONFLICT_QUERY
};

/* kept plans, prepared on first use; the catalog they read is the extension's own */
static SPIPlanPtr guard_plans[GUARD_NUM_EVENTS][GUARD_NUM_QUERIES];
static SPIPlanPtr read_counter_plan = NULL;
static SPIPlanPtr read_tenant_counter_plan = NULL;
static SPIPlanPtr truncate_plan = NULL;
static SPIPlanPtr truncate_seats_plan = NULL;
static SPIPlanPtr authorize_plan = NULL;
/* [status_grants() defined (StatusGrantsDefined)][tenant keyed] */
static SPIPlanPtr insert_license_plans[2][2];
static SPIPlanPtr delete_license_plan = NULL;
static SPIPlanPtr frozen_plan = NULL;
static SPIPlanPtr frozen_tenant_plan = NULL;
static SPIPlanPtr tenant_changes_plans[GUARD_NUM_EVENTS];

/*
 * Licenses left after the last guarded statement, when it changed exactly
 * one subscription: license_consume and license_release return it without
 * another query.
 */
static int64 last_guarded_subscription = 0;

static int32 last_licenses_left = 0;

static int64
GetInt64(int row, int col, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
									   col, isnull));
}

pg_noreturn static void SubscriptionMissing(Relation rel, int64 subscription_id);

static void
SubscriptionMissing(Relation rel, int64 subscription_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id),
			 rel ? errtable(rel) : 0));
}

/*
 * Read a subscription's counter (used, capacity, active), through SPI; its
 * tenant, when known (not NULL), named in the statement: on Citus it then
 * runs on the tenant's shard, from the guard on a shard too (issue 17).
 * SubscriptionMissing (rel) when there is none.
 */
static void
ReadCounter(Relation rel, const int64 *tenant, int64 subscription_id, int64 *used, int64 *capacity,
			bool *active)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(subscription_id), Int64GetDatum(tenant ? *tenant : 0)};
	SPIPlanPtr *plan = tenant ? &read_tenant_counter_plan : &read_counter_plan;
	bool		isnull;

	KeptPlan(plan,
			 tenant
			 ? "SELECT used, capacity, active FROM subscription.license_counter"
			 " WHERE tenant_id = $2 AND subscription_id = $1"
			 : "SELECT used, capacity, active FROM subscription.license_counter"
			 " WHERE subscription_id = $1",
			 tenant ? 2 : 1, argtypes);
	if (SPI_execute_plan(*plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the license counter of subscription " INT64_FORMAT,
			 subscription_id);
	if (SPI_processed == 0)
		SubscriptionMissing(rel, subscription_id);
	*used = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*capacity = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	*active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
}

/*
 * A closed counter whose account is frozen (a subscription paused in mode
 * 'freeze', issue 19): say so, and how to lift it.  Only on the way to a
 * refusal: the guard itself reads nothing but the counter.
 */
static void
FrozenRefusal(Relation rel, const int64 *tenant, int64 subscription_id)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(subscription_id), Int64GetDatum(tenant ? *tenant : 0)};
	SPIPlanPtr *plan = tenant ? &frozen_tenant_plan : &frozen_plan;
	bool		isnull;
	bool		paused;
	int64		account;
	int64		pausing;
	int64		invoice;

	KeptPlan(plan,
			 tenant
			 ? "SELECT s.account_id, subscription.freezing_subscription(s.tenant_id, s.account_id),"
			 "       subscription.dunning_freeze_invoice(s.tenant_id, s.account_id)"
			 "  FROM subscription.subscription AS s WHERE s.tenant_id = $2 AND s.id = $1"
			 : "SELECT s.account_id, subscription.freezing_subscription(s.tenant_id, s.account_id),"
			 "       subscription.dunning_freeze_invoice(s.tenant_id, s.account_id)"
			 "  FROM subscription.subscription AS s WHERE s.id = $1",
			 tenant ? 2 : 1, argtypes);
	if (SPI_execute_plan(*plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription " INT64_FORMAT, subscription_id);
	if (SPI_processed == 0)
		return;
	account = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	pausing = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		return;
	invoice = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &paused));
	/* D4: frozen by its dunning ladder's final action, not by a pause */
	if (!paused)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("account " INT64_FORMAT " is frozen", account),
				 errdetail("Subscription " INT64_FORMAT " is past due: no license is assigned.", pausing),
				 errhint("Pay invoice " INT64_FORMAT " with subscription.record_payment().", invoice),
				 errtable(rel)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("account " INT64_FORMAT " is frozen", account),
			 errdetail("Subscription " INT64_FORMAT " is paused in mode freeze: no license is assigned.", pausing),
			 errhint("Resume it with subscription.resume(" INT64_FORMAT ").", pausing),
			 errtable(rel)));
}

/*
 * Say why a subscription's counter could not move by delta (> 0).
 */
static void
CounterRefusal(Relation rel, const int64 *tenant, int64 subscription_id, int32 delta)
{
	int64		used;
	int64		capacity;
	bool		active;

	ReadCounter(rel, tenant, subscription_id, &used, &capacity, &active);

	if (!active)
		FrozenRefusal(rel, tenant, subscription_id);
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
 * Move the subscription's counter (in table of w) by delta, or leave it when
 * an assignment would pass the capacity or the subscription is not active:
 * false, also when the counter is gone.  The new licenses left in *left.
 * The one place where a counter moves.
 */
static bool
MoveCounterRow(RowWrites *w, int table, const int64 *tenant, int64 subscription_id, int32 delta, int32 *left)
{
	Relation	counters = RowWriteRelation(w, table);
	TupleTableSlot *counter = RowWriteStoredSlot(w, table);
	TupleTableSlot *moved = RowWriteNewSlot(w, table);
	AttrNumber	used_col = RowWriteColumn(counters, "used");
	Datum		key = Int64GetDatum(subscription_id);
	Snapshot	latest;
	bool		found;
	int32		used;
	int32		capacity;
	bool		active;
	bool		isnull;

	/*
	 * Read now, not when the writes began: a statement that has waited for
	 * another subscription's counter finds this one as it is, and only a
	 * counter changed while we wait for it is a serialization failure.
	 */
	latest = RegisterSnapshot(GetLatestSnapshot());
	found = FetchRowByTenantKey(counters, latest, tenant, 1, &key, counter);
	UnregisterSnapshot(latest);
	if (!found || !LockLatestRow(w, table, counter, LockTupleNoKeyExclusive))
		return false;
	used = DatumGetInt32(slot_getattr(counter, used_col, &isnull));
	capacity = DatumGetInt32(slot_getattr(counter, RowWriteColumn(counters, "capacity"), &isnull));
	active = DatumGetBool(slot_getattr(counter, RowWriteColumn(counters, "active"), &isnull));
	if (delta > 0 && !(active && used + delta <= capacity))
		return false;

	/* the counter's CHECK is checked by the update, as for any write */
	slot_getallattrs(counter);
	memcpy(moved->tts_values, counter->tts_values, sizeof(Datum) * counter->tts_nvalid);
	memcpy(moved->tts_isnull, counter->tts_isnull, sizeof(bool) * counter->tts_nvalid);
	moved->tts_values[used_col - 1] = Int32GetDatum(used + delta);
	UpdateRow(w, table, counter, moved);
	*left = capacity - (used + delta);
	return true;
}

/*
 * Move one subscription's counter by delta, or refuse.  Called for each
 * subscription of a statement in ascending id order.
 */
static void
MoveCounter(Relation rel, RowWrites *w, int table, const int64 *tenant, int64 subscription_id, int32 delta)
{
	int32		left;

	if (MoveCounterRow(w, table, tenant, subscription_id, delta, &left))
	{
		last_guarded_subscription = subscription_id;
		last_licenses_left = left;
	}
	/*
	 * A release always finds a counter that still exists; none did, so the
	 * subscription is being deleted together with its licenses.
	 */
	else if (delta > 0)
		CounterRefusal(rel, tenant, subscription_id, delta);
}

/*
 * Refuse a service license whose seat is taken (R11): name the license that
 * holds it, read with the latest snapshot, since the holder may have
 * committed while we waited for its index entry.
 */
static void
SeatRefusal(Relation rel, const int64 *tenant, int64 member_id, const char *product, int64 subscription_id)
{
	static SPIPlanPtr holder_plan = NULL;
	static SPIPlanPtr holder_tenant_plan = NULL;
	Oid			argtypes[4] = {INT8OID, TEXTOID, INT8OID, INT8OID};
	Datum		values[4] = {Int64GetDatum(member_id), CStringGetTextDatum(product),
	Int64GetDatum(subscription_id), Int64GetDatum(tenant ? *tenant : 0)};
	SPIPlanPtr *plan = tenant ? &holder_tenant_plan : &holder_plan;
	bool		isnull;
	int64		holder = 0;

	/* the tenant, when known, named: on Citus, from the guard on a shard too */
	KeptPlan(plan,
			 tenant
			 ? "SELECT subscription_id FROM subscription.service_seat"
			 " WHERE tenant_id = $4 AND member_id = $1 AND product = $2 AND subscription_id <> $3"
			 : "SELECT subscription_id FROM subscription.service_seat"
			 " WHERE member_id = $1 AND product = $2 AND subscription_id <> $3",
			 tenant ? 4 : 3, argtypes);
	if (SPI_execute_snapshot(*plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the service seats");
	if (SPI_processed > 0)
		holder = GetInt64(0, 1, &isnull);
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("member " INT64_FORMAT " already holds a service license of product \"%s\"",
					member_id, product),
			 holder != 0 ?
			 errdetail("The member holds a license of subscription " INT64_FORMAT
					   "; a member holds at most one service per product.", holder) :
			 errdetail("The same statement gives the member two; a member holds at most one service per product."),
			 errhint("Release that license first, or assign an option plan instead."),
			 rel ? errtable(rel) : 0));
}

/*
 * Run SEAT_QUERY (seat_plan) in a subtransaction; should a seat's key be
 * taken, roll it back and refuse the first license that SEAT_CONFLICT_QUERY
 * (conflict_plan) names.  One subtransaction per statement, not per row.
 */
static void
SeatsOrRefuse(Relation rel, SPIPlanPtr seat_plan, SPIPlanPtr conflict_plan, Datum *values)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	volatile bool refused = false;
	bool		isnull;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);
	PG_TRY();
	{
		/* latest snapshot: a seat that committed while we waited is a conflict, not a surprise */
		if (SPI_execute_snapshot(seat_plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 false, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not take the service seats");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		FreeErrorData(edata);
		refused = true;
	}
	PG_END_TRY();

	if (!refused)
		return;
	if (SPI_execute_snapshot(conflict_plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not find the refused service license");
	if (SPI_processed == 0)
		elog(ERROR, "a service seat was refused, but no license conflicts");
	SeatRefusal(rel, NULL, GetInt64(0, 1, &isnull),
				SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
				GetInt64(0, 3, &isnull));
}

/*
 * TRUNCATE: every counter goes to 0, with a license_truncate history row per
 * subscription whose counter moved, and every service seat is freed.  On a
 * single server, over the tables.  On Citus the shell of the distributed
 * table holds no row: its trigger does nothing, and the trigger of each
 * shard that Citus truncates does the work for that shard's tenants, on the
 * colocated shards of license_counter, subscription and service_seat (the
 * same hash range), named as such: inside a shard's trigger Citus runs only
 * what executes on this node (ResetUsage() in limits.c does the same).
 */
static void
GuardTruncate(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			shards[3];
	const char *const tables[3] = {"license_counter", "subscription", "service_seat"};
	char	   *names[3];
	int			i;

	if (LogicalRelation(relid) == relid)
	{
		/* the shell of a Citus table: its shards' triggers count */
		if (CitusTable(relid))
			return;
		KeptPlan(&truncate_plan,
				 "WITH reset AS (UPDATE subscription.license_counter SET used = 0 WHERE used <> 0"
				 "               RETURNING subscription_id)"
				 " SELECT 'license_truncate', s.account_id, s.id, '{}'::jsonb"
				 "   FROM reset JOIN subscription.subscription AS s ON s.id = reset.subscription_id"
				 "  ORDER BY s.id",
				 0, NULL);
		if (SPI_execute_plan(truncate_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not reset the license counters");
		RecordQueriedHistory(false);
		/* the license table is locked exclusively: no seat can be written meanwhile */
		KeptPlan(&truncate_seats_plan, "TRUNCATE subscription.service_seat", 0, NULL);
		if (SPI_execute_plan(truncate_seats_plan, NULL, NULL, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not free the service seats");
		return;
	}

	for (i = 0; i < 3; i++)
	{
		shards[i] = ColocatedShard(relid, OwnTable(tables[i]));
		/* distribute() colocates every tenant table with account */
		if (!OidIsValid(shards[i]))
			elog(ERROR, "shard \"%s\" of subscription.license has no colocated shard of subscription.%s",
				 RelationGetRelationName(rel), tables[i]);
		names[i] = quote_qualified_identifier(get_namespace_name(get_rel_namespace(shards[i])),
											  get_rel_name(shards[i]));
	}
	/* a shard's name is fixed for its life, but not known before: not kept */
	if (SPI_execute(psprintf("WITH reset AS (UPDATE %s SET used = 0 WHERE used OPERATOR(pg_catalog.<>) 0"
							 "               RETURNING tenant_id, subscription_id)"
							 " SELECT 'license_truncate', s.account_id, s.id, '{}'::jsonb, s.tenant_id"
							 "   FROM reset JOIN %s AS s ON s.tenant_id OPERATOR(pg_catalog.=) reset.tenant_id"
							 "                          AND s.id OPERATOR(pg_catalog.=) reset.subscription_id"
							 "  ORDER BY s.tenant_id, s.id", names[0], names[1]),
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not reset the license counters");
	RecordQueriedHistory(false);
	/* this shard of license is locked exclusively: no seat of its tenants can be written meanwhile */
	if (SPI_execute(psprintf("DELETE FROM %s", names[2]), false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not free the service seats");
}

/*
 * L11: a license goes to a member of the subscription's own account.  The
 * one check of it, asked on every path that assigns: the one-row guard (a
 * single INSERT, license_consume), the statement guard (each row that a
 * bulk INSERT or an UPDATE writes, even one whose member and subscription
 * stay), license_consume before its INSERT (so that its refusal names no
 * statement of ours) and license_release (PrecheckLicense).  The member is
 * read by its key with snapshot: one that does not exist is refused with
 * P0002, one of another account with 22023.  rel, the license table, when
 * a guard asks.
 */
typedef struct MemberCheck
{
	Relation	members;
	TupleTableSlot *member;
	AttrNumber	account_col;
	AttrNumber	tenant_col;
	Snapshot	snapshot;
	KeyScan    *scan;			/* opened by the first lookup, then rescanned */
} MemberCheck;

static void
BeginMemberCheck(MemberCheck *mc, Snapshot snapshot)
{
	mc->members = table_open(OwnTable("member"), AccessShareLock);
	mc->member = table_slot_create(mc->members, NULL);
	mc->account_col = RowWriteColumn(mc->members, "account_id");
	/* none in the 1.0 schema, which the library also runs until its update */
	mc->tenant_col = get_attnum(RelationGetRelid(mc->members), "tenant_id");
	mc->snapshot = snapshot;
	mc->scan = NULL;
}

static void
EndMemberCheck(MemberCheck *mc)
{
	if (mc->scan != NULL)
		EndKeyScan(mc->scan);
	ExecDropSingleTupleTableSlot(mc->member);
	table_close(mc->members, NoLock);
}

/* the tenant of an account (0 when it does not exist), read by its id */
static int64
TenantOfAccount(MemberCheck *mc, int64 account_id)
{
	Relation	accounts = table_open(OwnTable("account"), AccessShareLock);
	TupleTableSlot *account = table_slot_create(accounts, NULL);
	Datum		key = Int64GetDatum(account_id);
	bool		isnull;
	int64		tenant = 0;

	if (FetchRowByKey(accounts, mc->snapshot, 1, &key, account))
		tenant = DatumGetInt64(slot_getattr(account, RowWriteColumn(accounts, "tenant_id"), &isnull));
	ExecDropSingleTupleTableSlot(account);
	table_close(accounts, NoLock);
	return tenant;
}

static void
CheckMember(MemberCheck *mc, Relation rel, const int64 *tenant, int64 subscription_id, int64 account_id,
			int64 member_id)
{
	Datum		key = Int64GetDatum(member_id);
	bool		isnull;
	bool		found;
	int64		member_account = 0;

	if (mc->scan == NULL)
		mc->scan = BeginTenantKeyScan(mc->members, mc->snapshot, tenant, 1, &key);
	else
		RescanKeyScan(mc->scan, &key);
	found = KeyScanNext(mc->scan, mc->member);
	if (found)
		member_account = DatumGetInt64(slot_getattr(mc->member, mc->account_col, &isnull));
	/*
	 * A member of another tenant does not exist for the subscription: on
	 * Citus the member is looked for in the subscription's tenant alone,
	 * and a single server, which finds it by its id alone, says the same
	 * (issue 17)
	 */
	if (!found ||
		(member_account != account_id && mc->tenant_col != InvalidAttrNumber &&
		 DatumGetInt64(slot_getattr(mc->member, mc->tenant_col, &isnull)) !=
		 (tenant != NULL ? *tenant : TenantOfAccount(mc, account_id))))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("member " INT64_FORMAT " does not exist", member_id),
				 rel ? errtable(rel) : 0));
	if (member_account != account_id)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member " INT64_FORMAT " does not belong to the account of subscription " INT64_FORMAT,
						member_id, subscription_id),
				 errdetail("The member belongs to account " INT64_FORMAT ", the subscription to account " INT64_FORMAT ".",
						   member_account, account_id),
				 errhint("A license goes to a member of the subscription's own account."),
				 rel ? errtable(rel) : 0));
}

/* CheckMember() for one member, in a check of its own */
static void
CheckOneMember(Snapshot snapshot, Relation rel, const int64 *tenant, int64 subscription_id, int64 account_id,
			   int64 member_id)
{
	MemberCheck mc;

	BeginMemberCheck(&mc, snapshot);
	CheckMember(&mc, rel, tenant, subscription_id, account_id, member_id);
	EndMemberCheck(&mc);
}

/*
 * CheckMember() for every row that a bulk INSERT or an UPDATE wrote (rows),
 * in the statement's order, with the latest snapshot: an index lookup per
 * row, the subscription's account read again only when the subscription
 * changes from one row to the next.
 */
static void
CheckStatementMembers(Relation rel, Tuplestorestate *rows)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	AttrNumber	subscription_col = SPI_fnumber(tupdesc, "subscription_id");
	AttrNumber	member_col = SPI_fnumber(tupdesc, "member_id");
	TupleTableSlot *row = MakeSingleTupleTableSlot(tupdesc, &TTSOpsMinimalTuple);
	Relation	subscriptions = table_open(OwnTable("subscription"), AccessShareLock);
	TupleTableSlot *subscription = table_slot_create(subscriptions, NULL);
	AttrNumber	account_col = RowWriteColumn(subscriptions, "account_id");
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	int			readptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	MemberCheck mc;
	int64		subscription_id = 0;
	int64		account_id = 0;
	bool		isnull;

	BeginMemberCheck(&mc, latest);
	tuplestore_select_read_pointer(rows, readptr);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, row))
	{
		int64		row_subscription = DatumGetInt64(slot_getattr(row, subscription_col, &isnull));

		if (row_subscription != subscription_id || subscription_id == 0)
		{
			Datum		key = Int64GetDatum(row_subscription);

			if (!FetchRowByKey(subscriptions, latest, 1, &key, subscription))
				SubscriptionMissing(rel, row_subscription);
			subscription_id = row_subscription;
			account_id = DatumGetInt64(slot_getattr(subscription, account_col, &isnull));
		}
		CheckMember(&mc, rel, NULL, subscription_id, account_id,
					DatumGetInt64(slot_getattr(row, member_col, &isnull)));
	}
	EndMemberCheck(&mc);
	UnregisterSnapshot(latest);
	ExecDropSingleTupleTableSlot(subscription);
	table_close(subscriptions, NoLock);
	ExecDropSingleTupleTableSlot(row);
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
	Oid			counters_relid;
	RowWrites  *counters;
	bool		isnull;

	/* L11, first, as on the one-row path: each member that the rows name */
	if (event != GUARDED_DELETE)
		CheckStatementMembers(rel, trigdata->tg_newtable);

	for (q = 0; q < GUARD_NUM_QUERIES; q++)
		if (plans[q] == NULL && guard_query_applies[event][q])
			KeptPlan(&plans[q],
					 psprintf(guard_queries[q], guard_changes[event],
					 /* the history query's second argument: the tenant (none on a 1.0 schema) */
							  q == GQ_HISTORY ? (TenantKeyed("license") ? "s.tenant_id" : "NULL::bigint")
							  : SeatProducts()), 0, NULL);

	/* latest snapshot: like ri_triggers.c, see what others have committed */
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
		subscriptions[i] = GetInt64(i, 1, &isnull);
		deltas[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}

	if (SPI_execute_snapshot(plans[GQ_HISTORY], NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the history of the license changes");
	RecordQueriedHistory(false);

	/* seats freed first: an UPDATE may move a service license between subscriptions */
	if (guard_query_applies[event][GQ_UNSEAT] &&
		SPI_execute_snapshot(plans[GQ_UNSEAT], NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not free the service seats");
	if (guard_query_applies[event][GQ_SEAT])
		SeatsOrRefuse(rel, plans[GQ_SEAT], plans[GQ_SEAT_CONFLICT], NULL);

	last_guarded_subscription = 0;
	counters_relid = OwnTable("license_counter");
	counters = BeginRowWrites(1, &counters_relid);
	for (i = 0; i < nsubscriptions; i++)
		if (deltas[i] != 0)
			MoveCounter(rel, counters, 0, NULL, subscriptions[i], deltas[i]);
	EndRowWrites(counters);
	if (nsubscriptions != 1)
		last_guarded_subscription = 0;
}

/* the extension's tables that a one-row change writes, in the order it writes them */
typedef enum OneRowTable
{
	ONE_ROW_SEAT,
	ONE_ROW_COUNTER,
	ONE_ROW_HISTORY,
	ONE_ROW_NUM_TABLES
} OneRowTable;

static const char *const one_row_tables[ONE_ROW_NUM_TABLES] = {
	[ONE_ROW_SEAT] = "service_seat",
	[ONE_ROW_COUNTER] = "license_counter",
	[ONE_ROW_HISTORY] = "history"
};

/* an int64 column of a stored row */
static int64
RowInt64(TupleTableSlot *slot, Relation rel, const char *column)
{
	bool		isnull;
	Datum		value = slot_getattr(slot, RowWriteColumn(rel, column), &isnull);

	return isnull ? 0 : DatumGetInt64(value);
}

/*
 * What the subscription's license needs: its account, and the products whose
 * seats it takes when its plan is a service (NIL for an option): the plan's
 * own, and those of the plans a suite includes (Z3, SUITE_SEAT_PRODUCTS).
 * False when the subscription does not exist.
 */
static bool
ReadTarget(Snapshot snapshot, const int64 *tenant, int64 subscription_id, int64 *account_id,
		   List **service_products)
{
	Relation	subscriptions = table_open(OwnTable("subscription"), AccessShareLock);
	Relation	plans = table_open(OwnTable("plan"), AccessShareLock);
	TupleTableSlot *subscription = table_slot_create(subscriptions, NULL);
	TupleTableSlot *plan = table_slot_create(plans, NULL);
	Datum		key = Int64GetDatum(subscription_id);
	bool		found;
	bool		isnull;

	*service_products = NIL;
	found = FetchRowByTenantKey(subscriptions, snapshot, tenant, 1, &key, subscription);
	if (found)
	{
		*account_id = RowInt64(subscription, subscriptions, "account_id");
		key = slot_getattr(subscription, RowWriteColumn(subscriptions, "plan"), &isnull);
		if (FetchRowByKey(plans, snapshot, 1, &key, plan))
		{
			char	   *kind = TextDatumGetCString(slot_getattr(plan, RowWriteColumn(plans, "kind"), &isnull));

			Oid			suite_component = SuiteComponentTable();

			if (PlanTakesSeat(kind))
				*service_products = list_make1(TextDatumGetCString(slot_getattr(plan, RowWriteColumn(plans, "product"),
																				&isnull)));
			if (PlanTakesSeat(kind) && OidIsValid(suite_component))
			{
				Relation	components = table_open(suite_component, AccessShareLock);
				TupleTableSlot *component = table_slot_create(components, NULL);
				TupleTableSlot *included_plan = table_slot_create(plans, NULL);
				KeyScan    *ks;

				key = slot_getattr(plan, RowWriteColumn(plans, "code"), &isnull);
				ks = BeginKeyScan(components, snapshot, 1, &key);
				while (KeyScanNext(ks, component))
				{
					Datum		included = slot_getattr(component, RowWriteColumn(components, "plan"), &isnull);

					if (FetchRowByKey(plans, snapshot, 1, &included, included_plan))
						*service_products = lappend(*service_products,
													TextDatumGetCString(slot_getattr(included_plan,
																					 RowWriteColumn(plans, "product"),
																					 &isnull)));
				}
				EndKeyScan(ks);
				ExecDropSingleTupleTableSlot(included_plan);
				ExecDropSingleTupleTableSlot(component);
				table_close(components, NoLock);
			}
		}
	}
	ExecDropSingleTupleTableSlot(plan);
	ExecDropSingleTupleTableSlot(subscription);
	table_close(plans, NoLock);
	table_close(subscriptions, NoLock);
	return found;
}

/* free the service seats that the member's license of the subscription holds */
static void
Unseat(RowWrites *w, const int64 *tenant, int64 subscription_id, int64 member_id)
{
	Relation	seats = RowWriteRelation(w, ONE_ROW_SEAT);
	TupleTableSlot *seat = RowWriteStoredSlot(w, ONE_ROW_SEAT);
	Datum		key = Int64GetDatum(member_id);
	KeyScan    *ks = BeginTenantKeyScan(seats, RowWriteSnapshot(w), tenant, 1, &key);

	while (KeyScanNext(ks, seat))
		if (RowInt64(seat, seats, "subscription_id") == subscription_id &&
			LockLatestRow(w, ONE_ROW_SEAT, seat, LockTupleExclusive) &&
			RowInt64(seat, seats, "subscription_id") == subscription_id)
			DeleteRow(w, ONE_ROW_SEAT, seat);
	EndKeyScan(ks);
}

/*
 * Take the member's service seats of the products (R11) for its license of
 * the subscription: NULL, or the product whose seat another license holds
 * (nothing taken then counts: the caller refuses).
 */
static char *
TakeSeats(RowWrites *w, const int64 *tenant, int64 subscription_id, int64 member_id, List *products)
{
	Relation	seats = RowWriteRelation(w, ONE_ROW_SEAT);
	ListCell   *lc;

	foreach(lc, products)
	{
		TupleTableSlot *seat = RowWriteNewSlot(w, ONE_ROW_SEAT);
		bool	   *given = palloc0(sizeof(bool) * RelationGetDescr(seats)->natts);

		SetRowColumn(seat, given, seats, "member_id", Int64GetDatum(member_id));
		SetRowColumn(seat, given, seats, "product", CStringGetTextDatum((char *) lfirst(lc)));
		SetRowColumn(seat, given, seats, "subscription_id", Int64GetDatum(subscription_id));
		if (tenant != NULL)
			SetRowColumn(seat, given, seats, "tenant_id", Int64GetDatum(*tenant));
		if (!InsertRowUnlessConflict(w, ONE_ROW_SEAT, seat, given, NIL))
			return (char *) lfirst(lc);
	}
	return NULL;
}

/*
 * The history row of the licenses of a subscription that a change assigns
 * or releases: {"members": [member_id, ...]}, the members in the order
 * given (ascending), as GQ_HISTORY writes it for a statement
 */
static void
RecordMembers(RowWrites *w, const char *operation, const int64 *tenant_id, int64 account_id, int64 subscription_id,
			  const int64 *member_ids, int nmembers)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *details;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	v.type = jbvString;
	v.val.string.val = "members";
	v.val.string.len = strlen("members");
	pushJsonbValue(&state, WJB_KEY, &v);
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < nmembers; i++)
	{
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(member_ids[i]);
		pushJsonbValue(&state, WJB_ELEM, &v);
	}
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	details = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	RecordHistory(w, ONE_ROW_HISTORY, operation, tenant_id, &account_id, &subscription_id,
				  JsonbPGetDatum(JsonbValueToJsonb(details)));
}

/*
 * The same checks for a statement that changes one row (license_consume,
 * license_release, a single INSERT or DELETE): with the ids in hand, index
 * lookups and row writes (rowwrite.c) instead of scans of the transition
 * table.  In this order, as the statement-level path: the service seat,
 * the counter, the history.
 */
static void
GuardOneRow(Relation rel, Tuplestorestate *rows, bool assigning)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TupleTableSlot *slot;
	Oid			relids[ONE_ROW_NUM_TABLES];
	RowWrites  *w;
	int64		subscription_id;
	int64		member_id;
	int64		account_id = 0;
	int64		tenant_id = 0;
	AttrNumber	tenant_col = SPI_fnumber(tupdesc, "tenant_id");
	bool		no_tenant = true;
	const int64 *tenant;
	List	   *service_products;
	char	   *refused_product = NULL;
	bool		isnull;
	bool		target;
	bool		moved = false;
	bool		refused = false;
	int32		left = 0;
	int			t;

	slot = OnlyTransitionRow(rows, tupdesc);
	subscription_id = DatumGetInt64(slot_getattr(slot, SPI_fnumber(tupdesc, "subscription_id"), &isnull));
	member_id = DatumGetInt64(slot_getattr(slot, SPI_fnumber(tupdesc, "member_id"), &isnull));
	/* the license's tenant (none on a 1.0 schema) */
	if (tenant_col > 0)
		tenant_id = DatumGetInt64(slot_getattr(slot, tenant_col, &no_tenant));
	ExecDropSingleTupleTableSlot(slot);

	for (t = 0; t < ONE_ROW_NUM_TABLES; t++)
		relids[t] = OwnTable(one_row_tables[t]);
	w = BeginRowWrites(ONE_ROW_NUM_TABLES, relids);
	/* every lookup names the license's tenant: on Citus, the shard's own (issue 17) */
	tenant = no_tenant ? NULL : &tenant_id;
	target = ReadTarget(RowWriteSnapshot(w), tenant, subscription_id, &account_id, &service_products);
	if (assigning)
	{
		if (!target)
			SubscriptionMissing(rel, subscription_id);
		CheckOneMember(RowWriteSnapshot(w), rel, tenant, subscription_id, account_id, member_id);	/* L11 */
	}

	if (!assigning)
		Unseat(w, tenant, subscription_id, member_id);
	else
	{
		refused_product = TakeSeats(w, tenant, subscription_id, member_id, service_products);
		refused = refused_product != NULL;
	}
	if (!refused)
		moved = MoveCounterRow(w, ONE_ROW_COUNTER, tenant, subscription_id, assigning ? 1 : -1, &left);
	/* no history for the licenses of a subscription being deleted */
	if (moved && target)
		RecordMembers(w, assigning ? "license_assign" : "license_release",
					  tenant, account_id, subscription_id, &member_id, 1);
	EndRowWrites(w);

	if (moved)
	{
		last_guarded_subscription = subscription_id;
		last_licenses_left = left;
		return;
	}
	last_guarded_subscription = 0;
	if (!assigning)
		return;					/* the subscription is being deleted with its licenses */
	if (refused)
		SeatRefusal(rel, tenant, member_id, refused_product, subscription_id);
	CounterRefusal(rel, tenant, subscription_id, 1);
}

/*
 * The statement path on a Citus shard (issue 17): inside a shard's trigger
 * Citus runs only statements that stay on this node, and joins no
 * transition table with a distributed table, so GuardStatement()'s joins
 * cannot run there.  The transition tables are summed locally (a query of
 * them alone: each license's tenant, subscription, member and change,
 * tenant_changes), then each subscription is checked and written by
 * single-key lookups and row writes naming its tenant, with the one-row
 * path's pieces: L11 (CheckOneMember), the seats of R11 (Unseat,
 * TakeSeats), the counter (MoveCounter), and GQ_HISTORY's history rows,
 * one per subscription and direction.  In GuardStatement()'s order: every
 * member first, the history, the seats freed, then taken, the counters in
 * subscription order.
 */
typedef struct LicenseChange
{
	int64		tenant;
	int64		subscription;
	int64		member;
	int32		d;
} LicenseChange;

/* what GuardStatementByTenant() reads of one subscription's changes */
typedef struct SubscriptionChanges
{
	uint64		first;			/* its changes: [first, end) */
	uint64		end;
	bool		target;			/* the subscription exists */
	int64		account;
	List	   *products;		/* the seats its licenses take */
	int32		delta;
} SubscriptionChanges;

static void
GuardStatementByTenant(Relation rel, GuardedEvent event)
{
	LicenseChange *c;
	SubscriptionChanges *subs;
	Oid			relids[ONE_ROW_NUM_TABLES];
	RowWrites  *w;
	Snapshot	latest;
	int64	   *members;
	uint64		n;
	uint64		nsubs = 0;
	uint64		i;
	uint64		k;
	int			t;
	bool		isnull;

	KeptPlan(&tenant_changes_plans[event],
			 psprintf("SELECT c.tenant_id, c.subscription_id, c.member_id, c.d FROM %s AS c ORDER BY 1, 2, 3",
					  tenant_changes[event]), 0, NULL);
	if (SPI_execute_plan(tenant_changes_plans[event], NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not summarize the license changes");
	n = SPI_processed;
	c = palloc(sizeof(LicenseChange) * Max(n, 1));
	subs = palloc0(sizeof(SubscriptionChanges) * Max(n, 1));
	members = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		c[i].tenant = GetInt64(i, 1, &isnull);
		c[i].subscription = GetInt64(i, 2, &isnull);
		c[i].member = GetInt64(i, 3, &isnull);
		c[i].d = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
		if (i == 0 || c[i].tenant != c[i - 1].tenant || c[i].subscription != c[i - 1].subscription)
			subs[nsubs++].first = i;
		subs[nsubs - 1].end = i + 1;
		subs[nsubs - 1].delta += c[i].d;
	}

	for (t = 0; t < ONE_ROW_NUM_TABLES; t++)
		relids[t] = OwnTable(one_row_tables[t]);
	w = BeginRowWrites(ONE_ROW_NUM_TABLES, relids);

	/* L11, first: each member assigned, with the latest snapshot */
	latest = RegisterSnapshot(GetLatestSnapshot());
	for (k = 0; k < nsubs; k++)
	{
		SubscriptionChanges *sc = &subs[k];

		sc->target = ReadTarget(latest, &c[sc->first].tenant, c[sc->first].subscription,
								&sc->account, &sc->products);
		for (i = sc->first; i < sc->end; i++)
			if (c[i].d > 0)
			{
				if (!sc->target)
					SubscriptionMissing(rel, c[i].subscription);
				CheckOneMember(latest, rel, &c[i].tenant, c[i].subscription, sc->account, c[i].member);
			}
	}
	UnregisterSnapshot(latest);

	/* the history: per subscription that still exists, released then assigned */
	for (k = 0; k < nsubs; k++)
	{
		SubscriptionChanges *sc = &subs[k];
		int			assigned;

		if (!sc->target)
			continue;
		for (assigned = 0; assigned <= 1; assigned++)
		{
			int			nmembers = 0;

			for (i = sc->first; i < sc->end; i++)
				if ((c[i].d > 0) == (assigned == 1))
					members[nmembers++] = c[i].member;
			if (nmembers > 0)
				RecordMembers(w, assigned ? "license_assign" : "license_release", &c[sc->first].tenant,
							  sc->account, c[sc->first].subscription, members, nmembers);
		}
	}

	/* seats freed first: an UPDATE may move a service license between subscriptions */
	for (k = 0; k < nsubs; k++)
		for (i = subs[k].first; i < subs[k].end; i++)
			if (c[i].d < 0)
				Unseat(w, &c[i].tenant, c[i].subscription, c[i].member);
	for (k = 0; k < nsubs; k++)
		for (i = subs[k].first; i < subs[k].end; i++)
			if (c[i].d > 0 && subs[k].target)
			{
				char	   *refused = TakeSeats(w, &c[i].tenant, c[i].subscription, c[i].member, subs[k].products);

				if (refused != NULL)
					SeatRefusal(rel, &c[i].tenant, c[i].member, refused, c[i].subscription);
			}

	last_guarded_subscription = 0;
	for (k = 0; k < nsubs; k++)
		if (subs[k].delta != 0)
			MoveCounter(rel, w, ONE_ROW_COUNTER, &c[subs[k].first].tenant, c[subs[k].first].subscription,
						subs[k].delta);
	EndRowWrites(w);
	if (nsubs != 1)
		last_guarded_subscription = 0;
}

/*
 * license_guard: AFTER ... FOR EACH STATEMENT trigger of subscription.license
 */
/*
 * Whether every license a statement inserts is copied in by a restore: of
 * a subscription copied in too (subscription.restored_copy, asked of the
 * subscription's id).  The dump holds what the guard would derive from
 * them (the counters, service seats and history rows), so the guard skips
 * them; verify() compares the copied counters with the licenses.  Leaves
 * the transition tables registered.
 */
static bool
RestoredLicenses(TriggerData *trigdata)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	bool		restored;

	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
	KeptPlan(&plan,
			 "SELECT bool_and(subscription.restored_copy('subscription.subscription_id_seq', subscription_id))"
			 "  FROM new_rows",
			 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the restored licenses");
	restored = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return !isnull && restored;
}

Datum
license_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Tuplestorestate *rows;
	GuardedEvent event;
	bool		one_row = false;
	bool		restoring;
	Oid			save_userid;
	int			save_sec_context;
	int			nest_level;

	event = ClassifyGuardedStatement(fcinfo, "license_guard", &rows);
	trigdata = (TriggerData *) fcinfo->context;
	/* subscription.license, or on Citus a shard of it */
	if (LogicalRelation(RelationGetRelid(trigdata->tg_relation)) != OwnTable("license"))
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

	/* asked before the identity changes (a restore is the caller's) */
	restoring = event == GUARDED_INSERT && RestoringRole();

	/* like ri_triggers.c: the checks see every row, whatever RLS says */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(RelationGetForm(trigdata->tg_relation)->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	nest_level = PinSearchPath();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (event == GUARDED_TRUNCATE)
		GuardTruncate(trigdata->tg_relation);
	else if (restoring && RestoredLicenses(trigdata))
	{
		/* copied in by a restore, with what they derive: nothing to do */
	}
	else
	{
		if (one_row)
			GuardOneRow(trigdata->tg_relation, rows, event == GUARDED_INSERT);
		else
		{
			/* RestoredLicenses() registered them already */
			if (!restoring && SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
				elog(ERROR, "could not register the transition tables");
			/* on a Citus shard (not its logical table): by tenant */
			if (LogicalRelation(RelationGetRelid(trigdata->tg_relation)) != RelationGetRelid(trigdata->tg_relation))
				GuardStatementByTenant(trigdata->tg_relation, event);
			else
				GuardStatement(trigdata, event);
		}
	}
	SPI_finish();

	UnpinSearchPath(nest_level);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	return PointerGetDatum(NULL);
}

/*
 * subscription.authorize() (R9, Z1, K8); without an actor, the same check
 * of the caller's role, without a query
 */
static void
Authorize(int64 account_id, const char *action)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];

	if (TrustedWithoutActor())
		return;
	values[0] = Int64GetDatum(account_id);
	values[1] = CStringGetTextDatum(action);
	KeptPlan(&authorize_plan, "SELECT subscription.authorize($1, $2)", 2, argtypes);
	if (SPI_execute_plan(authorize_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the actor's rights");
}

/*
 * Authorize() on the account of a subscription, read by its key alone; no
 * query without an actor.
 */
static void
AuthorizeOnSubscription(const int64 *tenant, int64 subscription_id, const char *action)
{
	static SPIPlanPtr account_plan = NULL;
	static SPIPlanPtr tenant_account_plan = NULL;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(subscription_id), Int64GetDatum(tenant ? *tenant : 0)};
	SPIPlanPtr *plan = tenant ? &tenant_account_plan : &account_plan;
	bool		isnull;

	if (TrustedWithoutActor())
		return;
	KeptPlan(plan,
			 tenant
			 ? "SELECT account_id FROM subscription.subscription WHERE tenant_id = $2 AND id = $1"
			 : "SELECT account_id FROM subscription.subscription WHERE id = $1",
			 tenant ? 2 : 1, argtypes);
	if (SPI_execute_plan(*plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up subscription " INT64_FORMAT, subscription_id);
	if (SPI_processed == 0)
		SubscriptionMissing(NULL, subscription_id);
	Authorize(GetInt64(0, 1, &isnull), action);
}

/*
 * D2: whether a subscription's status grants its seats, in SQL on s (a
 * subscription row): status_grants(), the rule's one place, from 1.1 on.
 * The library also serves a 1.0 schema until ALTER EXTENSION UPDATE, which
 * has no such function: there the rule of 1.0 is its seat counter's
 * "active" (1.0's sync_license_counter), read as it is.  Which one, asked
 * of the catalog at each call (a syscache lookup, which the catalog's
 * invalidations keep true), indexes the kept plans of each form.
 */
#define STATUS_GRANTS_SQL "subscription.status_grants(s.status)"
#define STATUS_GRANTS_1_0_SQL \
	"coalesce((SELECT c.active FROM subscription.license_counter AS c WHERE c.subscription_id = s.id), false)"

static bool
StatusGrantsDefined(void)
{
	Oid			textoid = TEXTOID;

	return SearchSysCacheExists3(PROCNAMEARGSNSP, CStringGetDatum("status_grants"),
								 PointerGetDatum(buildoidvector(&textoid, 1)),
								 ObjectIdGetDatum(get_namespace_oid("subscription", false)));
}

/*
 * The checks of license_consume and license_release that give the caller a
 * precise error before any write: unknown ids, the actor's rights, another
 * account, the subscription's state.  The guard checks again under locks.
 */
static void
PrecheckLicense(const char *fn, const int64 *tenant, int64 subscription_id, int64 member_id, bool assigning)
{
	/* [status_grants() defined][tenant named] */
	static SPIPlanPtr precheck_plans[2][2];
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(subscription_id), Int64GetDatum(member_id),
	Int64GetDatum(tenant ? *tenant : 0)};
	bool		v11 = StatusGrantsDefined();
	SPIPlanPtr *plan = &precheck_plans[v11][tenant != NULL];
	bool		isnull;
	int64		account;
	char	   *status;
	bool		grants;
	bool		holds;
	Snapshot	snapshot;

	/* the tenant, when known, named: on Citus the tenant's shards alone (issue 17) */
	if (*plan == NULL)
		KeptPlan(plan,
				 psprintf(tenant
						  ? "SELECT s.account_id, s.status, %s,"
						  "       EXISTS (SELECT FROM subscription.license AS l"
						  "                WHERE l.tenant_id = $3 AND l.subscription_id = $1 AND l.member_id = $2)"
						  "  FROM subscription.subscription AS s"
						  " WHERE s.tenant_id = $3 AND s.id = $1"
						  : "SELECT s.account_id, s.status, %s,"
						  "       EXISTS (SELECT FROM subscription.license AS l"
						  "                WHERE l.subscription_id = $1 AND l.member_id = $2)"
						  "  FROM subscription.subscription AS s"
						  " WHERE s.id = $1",
						  v11 ? STATUS_GRANTS_SQL : STATUS_GRANTS_1_0_SQL),
				 tenant ? 3 : 2, argtypes);
	/*
	 * Asked after a write that found nothing: under READ COMMITTED the
	 * statement's snapshot may still show a license that a concurrent
	 * release or DELETE has removed since, so the latest one decides (P0002,
	 * not a retry).  Under REPEATABLE READ and SERIALIZABLE the transaction's
	 * snapshot stays, and a change it cannot see is a serialization failure.
	 */
	snapshot = IsolationUsesXactSnapshot() ? GetActiveSnapshot() : GetLatestSnapshot();
	if (SPI_execute_snapshot(*plan, values, NULL, snapshot,
							 InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up subscription " INT64_FORMAT, subscription_id);

	if (SPI_processed == 0)
		SubscriptionMissing(NULL, subscription_id);
	account = GetInt64(0, 1, &isnull);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	grants = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	holds = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));

	/* nothing more is told to an actor who may not do this */
	Authorize(account, "assign_licenses");

	/* L11: a member that does not exist (P0002), or of another account (22023) */
	CheckOneMember(snapshot, NULL, tenant, subscription_id, account, member_id);
	/* D2: a past-due subscription keeps its seats until its ladder's end */
	if (assigning && !grants)
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

/*
 * Q1: whether the call is made under subscription.idempotency_key (not
 * empty); idempotent() clears it for the call it makes.  SQL:
 * idempotency_requested() returns boolean.
 */
PG_FUNCTION_INFO_V1(idempotency_requested);

bool
IdempotencyRequested(void)
{
	const char *key = GetConfigOption("subscription.idempotency_key", true, false);

	return key != NULL && key[0] != '\0';
}

Datum
idempotency_requested(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IdempotencyRequested());
}

/*
 * The keyed form's call through idempotent() (Q1-Q4): values and nulls are
 * subscription_id, member_id and the tenant, as WriteLicense has them.
 */
static int32
IdempotentLicenseCall(bool assigning, Datum *values, char *nulls)
{
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		args[3] = {values[2], values[0], values[1]};
	char		argnulls[3] = {nulls[2], nulls[0], nulls[1]};
	bool		isnull;
	Datum		kept;

	if (SPI_execute_with_args(assigning
							  ? "SELECT (subscription.idempotent('subscription.license_consume(bigint,bigint,bigint)', $1, "
							  "pg_catalog.jsonb_build_array($1, $2, $3)) OPERATOR(pg_catalog.#>>) '{}')::integer"
							  : "SELECT (subscription.idempotent('subscription.license_release(bigint,bigint,bigint)', $1, "
							  "pg_catalog.jsonb_build_array($1, $2, $3)) OPERATOR(pg_catalog.#>>) '{}')::integer",
							  3, argtypes, args, argnulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "idempotent() of a license failed");
	kept = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "idempotent() of a license returned no count");
	return DatumGetInt32(kept);
}

/* assign (or release) through a plain INSERT (DELETE): the guard does the rest */
static int32
WriteLicense(const char *fn, bool assigning, FunctionCallInfo fcinfo)
{
	/* the keyed form (tenant_id, subscription_id, member_id) names the tenant first */
	int			first = PG_NARGS() == 3 ? 1 : 0;
	bool		keyed = TenantKeyed("license");
	int64		subscription_id;
	int64		member_id;
	int64		tenant = 0;
	const int64 *known_tenant;
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			nest_level;
	int32		left;
	bool		v11;

	if (PG_ARGISNULL(first) || PG_ARGISNULL(first + 1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s() must not be null",
						PG_ARGISNULL(first) ? "subscription_id" : "member_id", fn)));
	subscription_id = PG_GETARG_INT64(first);
	member_id = PG_GETARG_INT64(first + 1);
	values[0] = Int64GetDatum(subscription_id);
	values[1] = Int64GetDatum(member_id);

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * The tenant: the keyed form's, checked first (22023 for another
	 * tenant's subscription); the unkeyed form's, looked up.  Every write
	 * below names it (docs/design.md#keyed-forms); an unknown subscription
	 * has none, and the write finds nothing.
	 */
	if (first == 1)
	{
		RequireTenant(fn, fcinfo, "subscription", 1);
		if (PG_ARGISNULL(0))
			nulls[2] = 'n';
		else
			tenant = PG_GETARG_INT64(0);
	}
	else if (!keyed || !TenantOf("subscription", subscription_id, &tenant))
		nulls[2] = 'n';
	values[2] = Int64GetDatum(tenant);

	/*
	 * Q1-Q4 (docs/integrating.md#idempotency-keys): under a key, the call is
	 * idempotent()'s, which runs the keyed form once and keeps its result,
	 * or returns the result kept.
	 */
	if (IdempotencyRequested())
	{
		int32		kept = IdempotentLicenseCall(assigning, values, nulls);

		SPI_finish();
		UnpinSearchPath(nest_level);
		return kept;
	}
	/* the lookups below name it too, when the schema has it (issue 17) */
	known_tenant = keyed && nulls[2] != 'n' ? &tenant : NULL;

	/*
	 * With an actor, the rights come first, read by the subscription's key;
	 * any other refusal is explained after the write finds nothing.
	 */
	AuthorizeOnSubscription(known_tenant, subscription_id, "assign_licenses");

	last_guarded_subscription = 0;
	if (assigning)
	{
		Relation	subscriptions = table_open(OwnTable("subscription"), AccessShareLock);
		TupleTableSlot *subscription = table_slot_create(subscriptions, NULL);
		Snapshot	snapshot = RegisterSnapshot(GetTransactionSnapshot());
		Datum		key = Int64GetDatum(subscription_id);
		bool		isnull;

		/*
		 * L11 before the write, so that its refusal names no statement of
		 * ours; the guard checks again, as for any INSERT.
		 */
		if (!FetchRowByTenantKey(subscriptions, snapshot, known_tenant, 1, &key, subscription))
			SubscriptionMissing(NULL, subscription_id);
		CheckOneMember(snapshot, NULL, known_tenant, subscription_id,
					   DatumGetInt64(slot_getattr(subscription, RowWriteColumn(subscriptions, "account_id"),
												  &isnull)),
					   member_id);
		UnregisterSnapshot(snapshot);
		ExecDropSingleTupleTableSlot(subscription);
		table_close(subscriptions, NoLock);

		/*
		 * One statement checks that both exist and the state, and inserts;
		 * nothing inserted is explained by PrecheckLicense.
		 */
		v11 = StatusGrantsDefined();
		if (insert_license_plans[v11][keyed] == NULL)
			KeptPlan(&insert_license_plans[v11][keyed],
					 psprintf(keyed
							  ? "WITH inserted AS ("
							  "INSERT INTO subscription.license (tenant_id, subscription_id, member_id)"
							  " SELECT $3, $1, $2"
							  "   FROM subscription.subscription AS s"
							  "   JOIN subscription.member AS m ON m.tenant_id = $3 AND m.id = $2"
							  "  WHERE s.tenant_id = $3 AND s.id = $1 AND %s"
							  " ON CONFLICT DO NOTHING RETURNING 1) SELECT FROM inserted"
							  : "WITH inserted AS ("
							  "INSERT INTO subscription.license (subscription_id, member_id)"
							  " SELECT $1, $2"
							  "   FROM subscription.subscription AS s"
							  "   JOIN subscription.member AS m ON m.id = $2"
							  "  WHERE s.id = $1 AND %s"
							  " ON CONFLICT DO NOTHING RETURNING 1) SELECT FROM inserted",
							  v11 ? STATUS_GRANTS_SQL : STATUS_GRANTS_1_0_SQL),
					 3, argtypes);
		/*
		 * The rows inserted, returned: on Citus a router query counts them
		 * (its INSERT ... SELECT reports the rows selected)
		 */
		if (SPI_execute_plan(insert_license_plans[v11][keyed], values, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not assign the license");
		if (SPI_processed == 0)
		{
			PrecheckLicense(fn, known_tenant, subscription_id, member_id, assigning);
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
				 keyed
				 ? "DELETE FROM subscription.license WHERE tenant_id = $3 AND subscription_id = $1 AND member_id = $2"
				 " RETURNING 1"
				 : "DELETE FROM subscription.license WHERE subscription_id = $1 AND member_id = $2 RETURNING 1",
				 3, argtypes);
		if (SPI_execute_plan(delete_license_plan, values, nulls, false, 0) != SPI_OK_DELETE_RETURNING)
			elog(ERROR, "could not release the license");
		if (SPI_processed == 0)
		{
			PrecheckLicense(fn, known_tenant, subscription_id, member_id, assigning);
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("subscription " INT64_FORMAT " changed while its license was being released",
							subscription_id),
					 errhint("Retry the transaction.")));
		}
	}

	if (last_guarded_subscription == subscription_id)
		left = last_licenses_left;
	else if (CitusPresent())
	{
		/*
		 * On Citus the guard ran on the worker of the license's shard: what
		 * it left is read back from the counter it moved, in this
		 * transaction (issue 17)
		 */
		int64		used;
		int64		capacity;
		bool		active;

		ReadCounter(NULL, known_tenant, subscription_id, &used, &capacity, &active);
		left = (int32) (capacity - used);
	}
	else
		elog(ERROR, "the license guard did not count subscription " INT64_FORMAT, subscription_id);

	SPI_finish();
	UnpinSearchPath(nest_level);
	return left;
}

/*
 * license_consume(subscription_id bigint, member_id bigint) returns int
 * license_consume(tenant_id bigint, subscription_id bigint, member_id bigint) returns int
 */
Datum
license_consume(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(WriteLicense("license_consume", true, fcinfo));
}

/*
 * license_release(subscription_id bigint, member_id bigint) returns int
 * license_release(tenant_id bigint, subscription_id bigint, member_id bigint) returns int
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
	int64		used;
	int64		capacity;
	bool		active;
	int			nest_level;

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	AuthorizeOnSubscription(NULL, subscription_id, "read");
	ReadCounter(NULL, NULL, subscription_id, &used, &capacity, &active);
	SPI_finish();
	UnpinSearchPath(nest_level);

	PG_RETURN_INT32((int32) (capacity - used));
}

/*
 * Rebuild the service seats of one tenant's subscriptions (ids, a bigint[]),
 * every statement naming the tenant; keyed false on a 1.0 schema, which has
 * no tenant key, where the statements name the subscriptions alone.
 */
static void
ReseatTenant(bool keyed, int64 tenant, Datum ids)
{
	static SPIPlanPtr unseat_plan[2];
	static SPIPlanPtr seat_plan[2];
	static SPIPlanPtr conflict_plan[2];
	const char *licenses = keyed
		? "(SELECT l.tenant_id, l.subscription_id, l.member_id, 1 AS d"
		"   FROM subscription.license AS l WHERE l.tenant_id = $2 AND l.subscription_id = ANY ($1))"
		: "(SELECT l.subscription_id, l.member_id, 1 AS d"
		"   FROM subscription.license AS l WHERE l.subscription_id = ANY ($1))";
	Oid			argtypes[2] = {INT8ARRAYOID, INT8OID};
	Datum		values[2] = {ids, Int64GetDatum(tenant)};

	KeptPlan(&unseat_plan[keyed],
			 keyed
			 ? "DELETE FROM subscription.service_seat AS x"
			 " USING subscription.license AS l"
			 " WHERE l.tenant_id = $2 AND l.subscription_id = ANY ($1)"
			 "   AND x.tenant_id = $2 AND x.member_id = l.member_id AND x.subscription_id = l.subscription_id"
			 : "DELETE FROM subscription.service_seat AS x"
			 " USING subscription.license AS l"
			 " WHERE l.subscription_id = ANY ($1)"
			 "   AND x.member_id = l.member_id AND x.subscription_id = l.subscription_id",
			 keyed ? 2 : 1, argtypes);
	if (SPI_execute_plan(unseat_plan[keyed], values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not free the service seats");
	KeptPlan(&seat_plan[keyed],
			 psprintf(keyed ? TENANT_SEAT_QUERY : SEAT_QUERY, licenses, SeatProducts()),
			 keyed ? 2 : 1, argtypes);
	KeptPlan(&conflict_plan[keyed],
			 psprintf(keyed ? TENANT_SEAT_CONFLICT_QUERY : SEAT_CONFLICT_QUERY, licenses, SeatProducts()),
			 keyed ? 2 : 1, argtypes);
	SeatsOrRefuse(NULL, seat_plan[keyed], conflict_plan[keyed], values);
}

/*
 * reseat_licenses(subscription_ids bigint[]) returns void
 * reseat_licenses(tenant_id bigint, subscription_ids bigint[]) returns void
 *
 * Rebuild the service seats of these subscriptions' licenses, after their
 * plan became a service or an option, or moved to another product: a member
 * who would hold two services of one product is refused (R11, 23514).  Tenant
 * by tenant, each in statements that name it: the keyed form's one, or the
 * tenants of the subscriptions, in tenant order (on Citus, a read of every
 * shard, from the coordinator).
 */
Datum
reseat_licenses(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr tenants_plan = NULL;
	Oid			argtypes[1] = {INT8ARRAYOID};
	int			nest_level;

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (PG_NARGS() == 2)
		ReseatTenant(true, PG_GETARG_INT64(0), PG_GETARG_DATUM(1));
	else if (!TenantKeyed("license"))
		ReseatTenant(false, 0, PG_GETARG_DATUM(0));
	else
	{
		Datum		values[1] = {PG_GETARG_DATUM(0)};
		SPITupleTable *tenants;
		uint64		n;
		uint64		i;
		bool		isnull;

		KeptPlan(&tenants_plan,
				 "SELECT s.tenant_id, array_agg(s.id ORDER BY s.id) FROM subscription.subscription AS s"
				 " WHERE s.id = ANY ($1) GROUP BY 1 ORDER BY 1",
				 1, argtypes);
		if (SPI_execute_plan(tenants_plan, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the subscriptions' tenants");
		tenants = SPI_tuptable;
		n = SPI_processed;
		for (i = 0; i < n; i++)
			ReseatTenant(true,
						 DatumGetInt64(SPI_getbinval(tenants->vals[i], tenants->tupdesc, 1, &isnull)),
						 SPI_getbinval(tenants->vals[i], tenants->tupdesc, 2, &isnull));
	}
	SPI_finish();
	UnpinSearchPath(nest_level);

	PG_RETURN_VOID();
}

/*
 * seat_product(kind text, product text) returns text
 *
 * The product whose seat a plan of this kind and product takes, NULL when it
 * takes none (an option): R11's rule above, for the SQL that needs it.
 */
Datum
seat_product(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (!PlanTakesSeat(kind))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(PG_GETARG_TEXT_PP(1));
}
