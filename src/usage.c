/*
 * Usage recorded without rows (issue 21, U4): record_usage() in C.
 *
 * The PL/pgSQL form (its wrapper, the keyed form and their statements,
 * each with its pinned search_path) cost more than its writes; here the
 * same steps run as kept plans of fixed statements, in the same order:
 *   Q1-Q4 under an idempotency key, idempotent() makes the call;
 *   the checks, in this order: in one query, the keyed form's tenant of
 *     the account (require_tenant; the unkeyed form's is tenant_of's), the
 *     arguments (22004), the account (P0002; the unkeyed form's where
 *     tenant_of found none); the caller's rights to pay (authorize, Z1:
 *     without an actor its first rule, in C, TrustedWithoutActor; with
 *     one, authorize() itself), at every call; the feature, used without
 *     rows (42704, 22023: require_recorded_feature, its passes kept until
 *     the catalog tables it reads change);
 *   a negative quantity: 22023;
 *   the counter locked (LockUsageCounter, created on the first use):
 *     concurrent calls of the account and feature queue here;
 *   under it, the key read: a retry, or a concurrent call with the key,
 *     which waited for the first's lock, moves nothing and returns the
 *     first's total;
 *   the counter moved under its limit (MoveUsageWithoutRows, the guard's
 *     code: 23514 at once), then the key written with its total, once.
 * On a single server the lock, the key's read and its write take the
 * one-row path of the license counters (src/rowwrite.c: index lookups and
 * row writes without a statement, the tables' CHECK, indexes and foreign
 * keys kept); on Citus they are statements that Citus routes.
 * No subtransaction (the review of issue 21: a caller recording usage in a
 * loop would overflow its cache of 64).  Each rule stays where it is: the
 * checks are the SQL functions every other caller calls, the counter's
 * move is the guard's.  SECURITY DEFINER in SQL: the extension's rights
 * serve only these fixed statements.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(record_usage);

#define RECORD_USAGE_ARGS 7

/*
 * The statements' parameters: $1 the tenant, $2 account_id, $3 feature,
 * $4 quantity, $5 key, $6 at, $7 the new total.
 */
static Oid	record_usage_argtypes[RECORD_USAGE_ARGS] = {
	INT8OID, INT8OID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID, INT8OID
};

static SPIPlanPtr idempotent_plan = NULL;
/*
 * The checks before the caller's rights: [0] the unkeyed form's, [1] the
 * keyed form's (require_tenant first); of each, [0] for arguments none NULL
 * (and the unkeyed form's account found: no query), [1] with
 * require_arguments and require_account
 */
static SPIPlanPtr checks_plan[2][2];
static SPIPlanPtr authorize_plan = NULL;
static SPIPlanPtr feature_plan = NULL;
static SPIPlanPtr recorded_plan = NULL;
static SPIPlanPtr key_plan = NULL;

/*
 * The features require_recorded_feature() passed (issue 21): what it
 * decides depends only on plan_limit, addon (require_feature) and
 * limited_table, whose every change invalidates their relcache entries
 * (the triggers limit_catalog_invalidates and limited_table_invalidates),
 * for every backend at its commit and for its own at once and again if it
 * rolls back.  The callback only marks the list invalid; the next call
 * empties it.  Only a pass is kept, found with a snapshot taken after the
 * invalidations that arrived (READ COMMITTED: a statement's own), and only
 * if none arrived meanwhile; a refusal is require_recorded_feature's error
 * each time.  The rule stays in that SQL function, which a call not in the
 * list runs.  Not kept where Citus is present: its catalog tables are
 * reference tables changed on their placements, whose triggers the guard
 * does not rely on there either (it reads the catalog's limit version with
 * each write, ReadCitusCounter).
 */
#define RECORDED_FEATURES 16
#define RECORDED_FEATURE_TABLES 3
static char *recorded_features[RECORDED_FEATURES];
static int	recorded_feature_count = 0;
static bool recorded_features_valid = false;
static uint64 recorded_feature_invalidations = 0;
static Oid	recorded_feature_relids[RECORDED_FEATURE_TABLES];

static void
RecordedFeatureCallback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < RECORDED_FEATURE_TABLES; i++)
		if (relid == InvalidOid || relid == recorded_feature_relids[i])
		{
			recorded_features_valid = false;
			recorded_feature_invalidations++;
			return;
		}
}

/*
 * require_recorded_feature('record_usage', feature): 42704, 22023; once
 * per feature while the tables it reads do not change.  Needs SPI
 * connected.
 */
static void
RequireRecordedFeature(Datum *values, char *nulls)
{
	static bool callback_registered = false;
	static const char *const tables[RECORDED_FEATURE_TABLES] = {"plan_limit", "addon", "limited_table"};
	const char *feature = TextDatumGetCString(values[2]);
	uint64		invalidations;
	int			i;

	if (!callback_registered)
	{
		RegisterRelcacheCallback(RELCACHE_RECORDED_FEATURES, RecordedFeatureCallback);
		callback_registered = true;
	}
	AcceptInvalidationMessages();
	if (!recorded_features_valid)
	{
		for (i = 0; i < recorded_feature_count; i++)
			pfree(recorded_features[i]);
		recorded_feature_count = 0;
		for (i = 0; i < RECORDED_FEATURE_TABLES; i++)
			recorded_feature_relids[i] = OwnTable(tables[i]);
		recorded_features_valid = true;
	}
	for (i = 0; i < recorded_feature_count; i++)
		if (strcmp(recorded_features[i], feature) == 0)
			return;

	invalidations = recorded_feature_invalidations;
	KeptPlan(&feature_plan, "SELECT subscription.require_recorded_feature('record_usage', $3)",
			 RECORD_USAGE_ARGS, record_usage_argtypes);
	if (SPI_execute_plan(feature_plan, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the feature of record_usage");
	if (recorded_features_valid && invalidations == recorded_feature_invalidations
		&& !IsolationUsesXactSnapshot() && recorded_feature_count < RECORDED_FEATURES && !CitusPresent())
		recorded_features[recorded_feature_count++] = MemoryContextStrdup(TopMemoryContext, feature);
}

#define USAGE_RECORD_KEY \
	" WHERE r.tenant_id = $1 AND r.account_id = $2 AND r.feature = $3 AND r.key = $5"

/* the single bigint of a one-row result; NULL: *isnull */
static int64
OneBigint(const char *what, bool *isnull)
{
	Datum		value;

	if (SPI_processed != 1)
		elog(ERROR, "%s returned %llu rows", what, (unsigned long long) SPI_processed);
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	return *isnull ? 0 : DatumGetInt64(value);
}

/*
 * The total of the usage's key ($1-$3, $5 of values) into *total, or false:
 * on a single server, read through usage_record's primary key (tenant_id,
 * account_id, feature, key) with the snapshot a statement of the caller
 * would take now (the latest under READ COMMITTED, the transaction's
 * under REPEATABLE READ and SERIALIZABLE, which the counter's lock has
 * checked), seeing the transaction's own keys: as a statement, its start
 * cost more than its one index lookup (issue 21).  Citus reads it by a
 * statement routed to the tenant's shard.
 */
static bool
ReadUsageKey(const Datum *values, int64 *total)
{
	static const char *const columns[4] = {"tenant_id", "account_id", "feature", "key"};
	static const int value_of[4] = {0, 1, 2, 4};
	Relation	rel = table_open(OwnTable("usage_record"), AccessShareLock);
	Oid			pkey = PrimaryKeyIndexOf(rel);
	Relation	index;
	ScanKeyData keys[4];
	IndexScanDesc scan;
	TupleTableSlot *row;
	Snapshot	snapshot;
	bool		found;
	bool		isnull;
	int			i;

	if (!OidIsValid(pkey))
		elog(ERROR, "relation \"%s\" has no primary key", RelationGetRelationName(rel));
	index = index_open(pkey, AccessShareLock);
	if (IndexRelationGetNumberOfKeyAttributes(index) != 4)
		elog(ERROR, "unexpected primary key of \"%s\"", RelationGetRelationName(rel));
	for (i = 0; i < 4; i++)
	{
		if (index->rd_index->indkey.values[i] != RowWriteColumn(rel, columns[i]))
			elog(ERROR, "unexpected primary key of \"%s\"", RelationGetRelationName(rel));
		ScanKeyInit(&keys[i], i + 1, BTEqualStrategyNumber, i < 2 ? F_INT8EQ : F_TEXTEQ, values[value_of[i]]);
		keys[i].sk_collation = index->rd_indcollation[i];
	}
	PushCopiedSnapshot(IsolationUsesXactSnapshot() ? GetTransactionSnapshot() : GetLatestSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	row = table_slot_create(rel, NULL);
#if PG_VERSION_NUM >= 180000
	scan = index_beginscan(rel, index, snapshot, NULL, 4, 0);
#else
	scan = index_beginscan(rel, index, snapshot, 4, 0);
#endif
	index_rescan(scan, keys, 4, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, row);
	if (found)
		*total = DatumGetInt64(slot_getattr(row, RowWriteColumn(rel, "total"), &isnull));
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(row);
	PopActiveSnapshot();
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return found;
}

/*
 * The usage's key written with its total ($1-$7 of values), on a single
 * server by the one-row path (src/rowwrite.c, InsertRow): the row goes
 * through usage_record's defaults, CHECK, primary key (a duplicate is
 * 23505) and foreign key, whose check runs at the end, as an INSERT's;
 * as a statement, its start and its CHECK built again cost more than the
 * write (issue 21).  Citus writes it by a routed INSERT.
 */
static void
InsertUsageKey(const Datum *values)
{
	Oid			relid = OwnTable("usage_record");
	RowWrites  *w = BeginRowWrites(1, &relid);
	Relation	rel = RowWriteRelation(w, 0);
	TupleTableSlot *row = RowWriteNewSlot(w, 0);
	bool	   *given = palloc0(sizeof(bool) * RelationGetDescr(rel)->natts);

	SetRowColumn(row, given, rel, "tenant_id", values[0]);
	SetRowColumn(row, given, rel, "account_id", values[1]);
	SetRowColumn(row, given, rel, "feature", values[2]);
	SetRowColumn(row, given, rel, "key", values[4]);
	SetRowColumn(row, given, rel, "quantity", values[3]);
	SetRowColumn(row, given, rel, "total", values[6]);
	SetRowColumn(row, given, rel, "at", values[5]);
	InsertRow(w, 0, row, given);
	EndRowWrites(w);
	pfree(given);
}

/*
 * The keyed call, after idempotent() if under a key: values and nulls are
 * the statements' parameters; the new total, or the total the key's first
 * call returned (*isnull where NULL).  Needs SPI connected.
 */
static int64
RecordUsage(bool keyed, Datum *values, char *nulls, bool *isnull)
{
	int64		total;
	TimestampTz at;
	int			full = 0;
	int			i;

	/*
	 * Q1-Q4 (docs/integrating.md#idempotency-keys): under a key, the call is
	 * idempotent()'s, which runs the keyed form once and keeps its result,
	 * or returns the result kept.
	 */
	if (IdempotencyRequested())
	{
		KeptPlan(&idempotent_plan,
				 "SELECT (subscription.idempotent("
				 "'subscription.record_usage(bigint,bigint,text,bigint,text,timestamptz)', $1,"
				 " pg_catalog.jsonb_build_array($1, $2, $3, $4, $5, $6)) OPERATOR(pg_catalog.#>>) '{}')::bigint",
				 RECORD_USAGE_ARGS, record_usage_argtypes);
		if (SPI_execute_plan(idempotent_plan, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "idempotent() of record_usage failed");
		return OneBigint("idempotent() of record_usage", isnull);
	}

	/*
	 * The checks in their order, each raising its error: first in one query,
	 * evaluated left to right, those of the tenant, the arguments and the
	 * account; a generic plan, so that require_arguments (IMMUTABLE) is not
	 * folded at planning, before require_tenant.  The unkeyed form's tenant
	 * is the account's own (tenant_of), which require_tenant would find
	 * again: its form leaves it out.  Two checks are called only on the way
	 * to their error (issue 21: PL/pgSQL calls less per call; their rules and
	 * messages stay their own): require_arguments, which raises only for a
	 * NULL argument, and, in the unkeyed form, require_account, whose account
	 * tenant_of found already (P0002 where it found none).  The unkeyed
	 * form with its account found and no NULL has none of them: no query.
	 */
	for (i = 1; i < 6; i++)
		if (nulls[i] == 'n')
			full = 1;
	if (!keyed && nulls[0] == 'n')
		full = 1;
#define RECORD_USAGE_ARGUMENTS \
	"subscription.require_arguments('record_usage', '{account_id,feature,quantity,key,at}'," \
	"  ARRAY[$2 IS NULL, $3 IS NULL, $4 IS NULL, $5 IS NULL, $6 IS NULL]), "
#define RECORD_USAGE_TENANT "subscription.require_tenant('record_usage', $1, 'account', $2), "
#define RECORD_USAGE_ACCOUNT "subscription.require_account($1, $2), "
#define RECORD_USAGE_CHECKS(CHECKS) "SELECT " CHECKS "true"
	if (keyed || full)
	{
		KeptPlanWithOptions(&checks_plan[keyed][full],
							keyed ? (full ? RECORD_USAGE_CHECKS(RECORD_USAGE_TENANT RECORD_USAGE_ARGUMENTS RECORD_USAGE_ACCOUNT)
									 : RECORD_USAGE_CHECKS(RECORD_USAGE_TENANT RECORD_USAGE_ACCOUNT))
							: RECORD_USAGE_CHECKS(RECORD_USAGE_ARGUMENTS RECORD_USAGE_ACCOUNT),
							RECORD_USAGE_ARGS, record_usage_argtypes, CURSOR_OPT_GENERIC_PLAN);
		if (SPI_execute_plan(checks_plan[keyed][full], values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the arguments of record_usage");
	}
	/* the checks leave no argument NULL */
	for (i = 0; i < 6; i++)
		if (nulls[i] == 'n')
			elog(ERROR, "record_usage's checks passed a null argument");

	/*
	 * Usage becomes a charge: the caller's right to pay (authorize, Z1),
	 * checked at each call, never kept.  Without an actor, the rule
	 * authorize() applies first, in C: the calling role trusted, at this
	 * moment and in this security context (42501 otherwise); with an actor,
	 * authorize() itself reads the actor's membership and rights now.
	 */
	if (!TrustedWithoutActor())
	{
		KeptPlan(&authorize_plan, "SELECT subscription.authorize($1, $2, 'pay', false)",
				 RECORD_USAGE_ARGS, record_usage_argtypes);
		if (SPI_execute_plan(authorize_plan, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the actor's rights");
	}

	/* the feature, used without rows: 42704, 22023 */
	RequireRecordedFeature(values, nulls);

	if (DatumGetInt64(values[3]) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a quantity of usage must be 0 or more"),
				 errdetail("It was " INT64_FORMAT ".", DatumGetInt64(values[3])),
				 errhint("subscription.correct_usage() corrects a quantity recorded, with its reason.")));

	/*
	 * The counter locked first (created on the account's first use): a
	 * concurrent call of the account and feature waits here for ours, and
	 * then finds our key.  Under it, a retry (or the concurrent call with
	 * the key, committed) finds the key and returns the first's total,
	 * moving nothing; else the counter moves under its limit (23514 at once,
	 * nothing written: the lock goes with the caller's savepoint) and the key
	 * is written once, with its total.  One write per row: the key's is an
	 * INSERT that no other can race (every key is written under its
	 * counter's lock), so a duplicate is 23505 like any (issue 21).
	 */
	LockUsageCounter(DatumGetInt64(values[0]), DatumGetInt64(values[1]), TextDatumGetCString(values[2]));
	if (CitusPresent())
	{
		KeptPlan(&recorded_plan, "SELECT r.total FROM subscription.usage_record AS r" USAGE_RECORD_KEY,
				 RECORD_USAGE_ARGS, record_usage_argtypes);
		if (SPI_execute_plan(recorded_plan, values, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the usage's key");
		if (SPI_processed == 1)
			return OneBigint("the usage's key", isnull);
	}
	else if (ReadUsageKey(values, &total))
	{
		*isnull = false;
		return total;
	}

	/* the counter, by the guard's code: the counter's triggers fire at its UPDATE's end */
	at = DatumGetTimestampTz(values[5]);
	total = MoveUsageWithoutRows(DatumGetInt64(values[0]), DatumGetInt64(values[1]), TextDatumGetCString(values[2]),
								 DatumGetInt64(values[3]), &at);
	values[6] = Int64GetDatum(total);
	nulls[6] = ' ';
	if (CitusPresent())
	{
		KeptPlan(&key_plan,
				 "INSERT INTO subscription.usage_record (tenant_id, account_id, feature, key, quantity, total, at)"
				 " VALUES ($1, $2, $3, $5, $4, $7, $6)",
				 RECORD_USAGE_ARGS, record_usage_argtypes);
		if (SPI_execute_plan(key_plan, values, nulls, false, 0) != SPI_OK_INSERT || SPI_processed != 1)
			elog(ERROR, "could not record the usage's key");
	}
	else
		InsertUsageKey(values);
	*isnull = false;
	return total;
}

/*
 * record_usage(tenant_id bigint, account_id bigint, feature text, quantity bigint, key text, at timestamptz) returns bigint
 * record_usage(account_id bigint, feature text, quantity bigint, key text, at timestamptz) returns bigint
 *
 * The unkeyed form finds the account's tenant (tenant_of) and is then the
 * keyed form (docs/design.md#keyed-forms).  The new total, or the total
 * the key's first call returned.
 */
Datum
record_usage(PG_FUNCTION_ARGS)
{
	int			first = PG_NARGS() == 6 ? 1 : 0;
	Datum		values[RECORD_USAGE_ARGS];
	char		nulls[RECORD_USAGE_ARGS];
	int64		tenant = 0;
	int64		total;
	bool		isnull;
	int			nest_level;
	int			i;

	for (i = 0; i < 5; i++)
	{
		values[i + 1] = PG_ARGISNULL(first + i) ? (Datum) 0 : PG_GETARG_DATUM(first + i);
		nulls[i + 1] = PG_ARGISNULL(first + i) ? 'n' : ' ';
	}
	values[6] = (Datum) 0;
	nulls[6] = 'n';

	/* the tenant: the keyed form's; the unkeyed form's, of the account (NULL if unknown) */
	if (first == 1)
	{
		if (!PG_ARGISNULL(0))
			tenant = PG_GETARG_INT64(0);
		nulls[0] = PG_ARGISNULL(0) ? 'n' : ' ';
	}
	else
		nulls[0] = !PG_ARGISNULL(0) && TenantOf("account", PG_GETARG_INT64(0), &tenant) ? ' ' : 'n';
	values[0] = Int64GetDatum(tenant);

	nest_level = PinSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	total = RecordUsage(first == 1, values, nulls, &isnull);
	SPI_finish();
	UnpinSearchPath(nest_level);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_INT64(total);
}
