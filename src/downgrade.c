/*-------------------------------------------------------------------------
 *
 * downgrade.c
 *	  apply_downgrade(): bring an account's data within its plan (C4-C12).
 *
 * The subscription's pending plan, if any, becomes its plan; the stored
 * limits follow (subscription.refresh_limits).  Then every registered
 * table of the account is trimmed to its new limit, features in
 * registration order, by one set-based statement per feature:
 *
 *	drop_newest			 delete beyond the limit: NULL order first, then the
 *						 newest, ties the highest key (C6, C9, C10)
 *	keep_most_referenced delete all but the rows most referenced through
 *						 the foreign keys into the table, ties the lowest
 *						 key (C5)
 *	scale				 integer proportional scaling, the leftover units
 *						 to the largest remainders, ties the lowest key (C7)
 *	cap					 set each value above the limit to the limit (C8)
 *	detach				 set the value to NULL where the feature is not
 *						 included (C11)
 *	block				 refuse while the account is over the limit
 *
 * Each statement archives the rows it deletes or changes, as they were, in
 * subscription.trimmed, and returns one row per row changed.  Deletes are
 * plain DELETEs: the application's own foreign-key actions apply, and the
 * limit guards keep the usage counters; a registered table's guard also
 * archives the rows such a cascade deletes (action 'cascade'), which are
 * returned after the rows of the statement that caused them.
 *
 * The account's usage counters are locked first (FOR UPDATE), so writers
 * of the account wait for the downgrade and then see its new limits.  A
 * downgrade with nothing to trim and no pending plan writes nothing: no
 * counter is created for an account with no rows to count.
 * dry_run runs the same code in a subtransaction that is rolled back, so
 * the preview is the real run (C12).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(apply_downgrade);
PG_FUNCTION_INFO_V1(shard_trim);

List	   *TrimmingCascades = NIL;
int64		TrimmingAccount = 0;
int64		TrimmingSubscription = 0;
Oid			TrimmingRelation = InvalidOid;
char	   *subscription_trimming = NULL;

/* A registered table, with the SQL fragments its trimming statement needs. */
typedef struct Registration
{
	Oid			relid;
	char	   *relation;		/* regclass text, qualified as needed */
	char	   *feature;
	DowngradePolicy policy;
	char	   *account;		/* t."account_id" */
	char	   *order;			/* t."activated_at", or NULL */
	char	   *value;			/* t."capacity", or NULL */
	char	   *value_ident;	/* "capacity" */
	char	   *value_key;		/* 'capacity': its key in the archived row */
	bool		value_integer;
	char	   *key_select;		/* t."id" AS key_1, ... (ctid without a key) */
	char	   *key_match;		/* t."id" = v.key_1 AND ... */
	char	   *key_asc;		/* t."id", ... */
	char	   *key_desc;		/* t."id" DESC, ... */
	char	   *row_id;			/* t."id"::text (RowIdText), set by TrimTable */
	char	   *references;		/* (SELECT count(*) FROM ...) + ..., or NULL */
	char	   *foreign_owned;	/* a referencing table of another owner, or NULL */
} Registration;

#define REGISTRATIONS_SQL REGISTRATIONS_OF("subscription.limited_table AS t")
/*
 * On a Citus node, a shard's registration ($1 the shard, $2 the feature):
 * the shard's own keys and the colocated shards that reference it, so that
 * its trim (shard_trim) names only the tables of this node.
 */
#define SHARD_REGISTRATION_SQL \
	REGISTRATIONS_OF("(SELECT $1::pg_catalog.regclass AS relation, l.feature, l.on_downgrade, l.account_column," \
					 "        l.order_column, l.value_column, l.position" \
					 "   FROM subscription.limited_table AS l WHERE l.feature = $2) AS t")
#define REGISTRATIONS_OF(FROM) \
	"SELECT t.relation::oid, t.relation::text, t.feature, t.on_downgrade," \
	"       't.' || quote_ident(t.account_column), 't.' || quote_ident(t.order_column)," \
	"       't.' || quote_ident(t.value_column), quote_ident(t.value_column)," \
	"       quote_literal(t.value_column), coalesce(c.is_integer, false)," \
	"       coalesce(k.key_select, 't.ctid AS key_1'), coalesce(k.key_match, 't.ctid = v.key_1')," \
	"       coalesce(k.key_asc, 't.ctid'), coalesce(k.key_desc, 't.ctid DESC')," \
	"       r.refs, r.foreign_owned" \
	"  FROM " FROM \
	"  LEFT JOIN LATERAL (" \
	"       SELECT a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) AS is_integer" \
	"         FROM pg_attribute AS a" \
	"        WHERE a.attrelid = t.relation AND a.attname = t.value_column) AS c ON true" \
	"  LEFT JOIN LATERAL (" \
	"       SELECT string_agg(format('t.%I AS key_%s', a.attname, k.n), ', ' ORDER BY k.n) AS key_select," \
	"              string_agg(format('t.%I = v.key_%s', a.attname, k.n), ' AND ' ORDER BY k.n) AS key_match," \
	"              string_agg(format('t.%I', a.attname), ', ' ORDER BY k.n) AS key_asc," \
	"              string_agg(format('t.%I DESC', a.attname), ', ' ORDER BY k.n) AS key_desc" \
	"         FROM pg_constraint AS p" \
	"        CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, n)" \
	"         JOIN pg_attribute AS a ON a.attrelid = p.conrelid AND a.attnum = k.attnum" \
	"        WHERE p.conrelid = t.relation AND p.contype = 'p'" \
	"       HAVING count(*) > 0) AS k ON true" \
	"  LEFT JOIN LATERAL (" \
	"       SELECT string_agg(format('(SELECT count(*) FROM %s AS r WHERE %s)'," \
	"                                f.conrelid::regclass, m.matched), ' + ' ORDER BY f.oid) AS refs," \
	"              min(f.conrelid::regclass::text) FILTER (WHERE fc.relowner <> pc.relowner) AS foreign_owned" \
	"         FROM pg_constraint AS f" \
	"         JOIN pg_class AS fc ON fc.oid = f.conrelid" \
	"         JOIN pg_class AS pc ON pc.oid = f.confrelid" \
	"        CROSS JOIN LATERAL (" \
	"              SELECT string_agg(format('r.%I = t.%I', fa.attname, pa.attname), ' AND ' ORDER BY k.n) AS matched" \
	"                FROM unnest(f.conkey, f.confkey) WITH ORDINALITY AS k(fk, pk, n)" \
	"                JOIN pg_attribute AS fa ON fa.attrelid = f.conrelid AND fa.attnum = k.fk" \
	"                JOIN pg_attribute AS pa ON pa.attrelid = f.confrelid AND pa.attnum = k.pk) AS m" \
	"        WHERE f.confrelid = t.relation AND f.contype = 'f') AS r ON true" \
	" ORDER BY t.position"

/* $1 account, $2 limit */
#define TRIM_NARGS 2

static char *
GetText(int row, int column)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column);
}

static Registration *RegistrationOf(uint64 i);

static List *
ReadRegistrations(void)
{
	List	   *registrations = NIL;
	uint64		i;

	if (SPI_execute(REGISTRATIONS_SQL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the limit registrations");
	for (i = 0; i < SPI_processed; i++)
		registrations = lappend(registrations, RegistrationOf(i));
	return registrations;
}

/* Row i of SPI_tuptable, read by REGISTRATIONS_OF. */
static Registration *
RegistrationOf(uint64 i)
{
	Registration *r = palloc0(sizeof(Registration));
	bool		isnull;

	{
		r->relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		r->relation = GetText(i, 2);
		r->feature = GetText(i, 3);
		r->policy = DowngradePolicyOf(GetText(i, 4));
		r->account = GetText(i, 5);
		r->order = GetText(i, 6);
		r->value = GetText(i, 7);
		r->value_ident = GetText(i, 8);
		r->value_key = GetText(i, 9);
		r->value_integer = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 10, &isnull));
		r->key_select = GetText(i, 11);
		r->key_match = GetText(i, 12);
		r->key_asc = GetText(i, 13);
		r->key_desc = GetText(i, 14);
		r->references = GetText(i, 15);
		r->foreign_owned = GetText(i, 16);
	}
	return r;
}

/*
 * The statement that trims one registered table: it changes the rows and
 * returns (action, row_id, old_value, new_value, old_row) in the order of
 * the policy.  It runs as the table's owner.
 */
static char *
TrimStatement(Registration *r)
{
	StringInfoData sql;
	const char *action;

	initStringInfo(&sql);
	if (r->policy == POLICY_DROP_NEWEST || r->policy == POLICY_KEEP_MOST_REFERENCED)
	{
		bool		referenced = r->policy == POLICY_KEEP_MOST_REFERENCED;
		char	   *keep_order;
		char	   *delete_order;

		action = "delete";
		if (referenced)
		{
			/*
			 * The count in both orders, not in a LATERAL subquery of its
			 * own: Citus plans no correlated subquery beside a subquery
			 * without FROM, and a distributed table's trim must stay one
			 * router statement on its tenant's shards.
			 */
			const char *refs = r->references ? r->references : "0";

			keep_order = psprintf("(%s) DESC, %s", refs, r->key_asc);
			delete_order = psprintf("(%s), %s", refs, r->key_desc);
		}
		else if (r->order != NULL)
		{
			keep_order = psprintf("%s IS NULL, %s, %s", r->order, r->order, r->key_asc);
			delete_order = psprintf("%s IS NULL DESC, %s DESC, %s", r->order, r->order, r->key_desc);
		}
		else
		{
			keep_order = r->key_asc;
			delete_order = r->key_desc;
		}
		/* the rows beyond the first $2 in keep order; n is the order of deletion */
		appendStringInfo(&sql,
						 "WITH v AS (SELECT %s, %s AS row_id, %s AS v,"
						 "                  row_number() OVER (ORDER BY %s) AS n"
						 "             FROM %s AS t WHERE %s = $1 ORDER BY %s OFFSET $2),"
						 " changed AS (DELETE FROM %s AS t USING v WHERE %s = $1 AND %s"
						 "             RETURNING v.n, v.row_id, t AS old_row, NULL::jsonb AS old_field,"
						 "                       %s AS old_value, NULL::bigint AS new_value)",
						 r->key_select, r->row_id, r->value ? r->value : "NULL::bigint",
						 delete_order,
						 r->relation,
						 r->account, keep_order,
						 r->relation, r->account, r->key_match,
						 r->value_integer ? "v.v::bigint" : "NULL::bigint");
	}
	else if (r->policy == POLICY_SCALE)
	{
		/*
		 * C7: each value becomes floor(v * limit / total), exactly (numeric
		 * div); the units left over go one each to the largest remainders
		 * (there are always more non-zero remainders than units left).
		 */
		action = "scale";
		appendStringInfo(&sql,
						 "WITH r AS (SELECT %s, %s AS row_id, %s::numeric AS v,"
						 "                  row_number() OVER (ORDER BY %s) AS k"
						 "             FROM %s AS t WHERE %s = $1 AND %s IS NOT NULL),"
						 " s AS (SELECT sum(r.v) AS total FROM r),"
						 " share AS (SELECT r.*, div(r.v * $2, s.total) AS base, mod(r.v * $2, s.total) AS rest"
						 "             FROM r CROSS JOIN s WHERE s.total > $2),"
						 " v AS (SELECT share.*, k AS n,"
						 "              base + CASE WHEN row_number() OVER (ORDER BY rest DESC, k)"
						 "                               <= $2 - sum(base) OVER () THEN 1 ELSE 0 END AS nv"
						 "         FROM share),"
						 " changed AS (UPDATE %s AS t SET %s = v.nv FROM v WHERE %s = $1 AND %s AND v.nv <> v.v"
						 "             RETURNING v.n, v.row_id, t AS old_row, v.v AS old_field,"
						 "                       v.v::bigint AS old_value, v.nv::bigint AS new_value)",
						 r->key_select, r->row_id, r->value, r->key_asc,
						 r->relation, r->account, r->value,
						 r->relation, r->value_ident, r->account, r->key_match);
	}
	else
	{
		bool		cap = r->policy == POLICY_CAP;

		/* cap: values above the limit become the limit; detach: NULL */
		action = cap ? "cap" : "detach";
		appendStringInfo(&sql,
						 "WITH v AS (SELECT %s, %s AS row_id, %s AS v, row_number() OVER (ORDER BY %s) AS n"
						 "             FROM %s AS t WHERE %s = $1 AND %s),"
						 " changed AS (UPDATE %s AS t SET %s = %s FROM v WHERE %s = $1 AND %s"
						 "             RETURNING v.n, v.row_id, t AS old_row, v.v AS old_field,"
						 "                       %s AS old_value, %s AS new_value)",
						 r->key_select, r->row_id, r->value, r->key_asc,
						 r->relation, r->account,
						 cap ? psprintf("%s > $2", r->value) : psprintf("%s IS NOT NULL", r->value),
						 r->relation, r->value_ident, cap ? "$2" : "NULL", r->account, r->key_match,
						 r->value_integer ? "v.v::bigint" : "NULL::bigint",
						 cap ? "$2" : "NULL::bigint");
	}

	/*
	 * the archive is written by the extension, from these rows
	 * (ApplyDowngrade); the old row as jsonb, its changed value as it was,
	 * made outside the UPDATE or DELETE: Citus takes no STABLE function in
	 * RETURNING
	 */
	appendStringInfo(&sql,
					 " SELECT '%s'::text, c.row_id, c.old_value, c.new_value,"
					 "        to_jsonb(c.old_row)%s"
					 "   FROM changed AS c ORDER BY c.n",
					 action,
					 r->policy == POLICY_DROP_NEWEST || r->policy == POLICY_KEEP_MOST_REFERENCED ? ""
					 : psprintf(" || jsonb_build_object(%s, c.old_field)", r->value_key));
	return sql.data;
}

/*
 * The account's use and limit of a feature, from its locked counter; an
 * account without a counter (no rows, or cap before its first write) uses
 * nothing, under the limit of its plan.
 */
static void
ReadCounter(int64 tenant, int64 account, const char *feature, int64 *used, int64 *limit, bool *unlimited)
{
	static SPIPlanPtr counter_plan[3];

	/* on Citus the stored limit, as the guard checks it there (limits.c) */
	bool		keyed = TenantKeyed("usage_counter");
	int			v = LimitsVersioned() && !CountersOnCitus();
	Oid			argtypes[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(account), CStringGetTextDatum(feature), Int64GetDatum(tenant)};
	bool		isnull;

	/*
	 * the limit the guards check (COUNTER_LIMIT), or the account's for a
	 * counter still missing; the tenant named, and the counter read alone
	 * (Citus joins no distributed table to a subquery without one)
	 */
#define READ_COUNTER_SQL(FROM, LIMIT, TENANT) \
	"SELECT u.used, " LIMIT \
	"  FROM subscription.usage_counter AS u" FROM \
	" WHERE " TENANT "u.account_id = $1 AND u.feature = $2"
	static SPIPlanPtr missing_plan[2];

	/* the versioned limit comes with the tenant key (1.1); 1.0 has neither */
	KeptPlan(&counter_plan[v ? 2 : keyed],
			 v ? READ_COUNTER_SQL(", " CATALOG_LIMIT_VERSION, COUNTER_LIMIT, "u.tenant_id = $3 AND ")
			 : keyed ? READ_COUNTER_SQL("", "u.limit_value", "u.tenant_id = $3 AND ")
			 : READ_COUNTER_SQL("", "u.limit_value", ""),
			 3, argtypes);
	if (SPI_execute_plan(counter_plan[v ? 2 : keyed], values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the usage counter of account " INT64_FORMAT " for feature \"%s\"", account, feature);
	if (SPI_processed == 0)
	{
		KeptPlan(&missing_plan[keyed], keyed ? "SELECT 0::bigint, subscription.limit_of($3, $1, $2)"
				 : "SELECT 0::bigint, subscription.limit_of($1, $2)", 3, argtypes);
		if (SPI_execute_plan(missing_plan[keyed], values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the %s limit of account " INT64_FORMAT, feature, account);
	}
	*used = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*limit = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, unlimited));
}

/*
 * Make the account's counter of a feature exact (one that drifted while the
 * guards were off, during a restore, would make the trimming wrong).  A
 * counter that this changed may be one that a writer created meanwhile,
 * unlocked and counted without its rows: lock it, and count again.
 */
static void
CountAndLock(Registration *r, int64 tenant, int64 account)
{
	static SPIPlanPtr lock_counter_plan[2];
	int			keyed = TenantKeyed("usage_counter");
	Oid			argtypes[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(account), CStringGetTextDatum(r->feature), Int64GetDatum(tenant)};

	if (RecountUsage(r->relid, r->feature, true, account, NULL, NULL) == 0)
		return;
	KeptPlan(&lock_counter_plan[keyed], keyed
			 ? "SELECT FROM subscription.usage_counter WHERE tenant_id = $3 AND account_id = $1 AND feature = $2 FOR UPDATE"
			 : "SELECT FROM subscription.usage_counter WHERE account_id = $1 AND feature = $2 FOR UPDATE",
			 3, argtypes);
	if (SPI_execute_plan(lock_counter_plan[keyed], values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the usage counter");
	RecountUsage(r->relid, r->feature, true, account, NULL, NULL);
}

/* block: the downgrade waits until the account has removed the excess. */
static void
RefuseBlockedDowngrade(Registration *r, int64 account, int64 used, int64 limit)
{
	Relation	rel = relation_open(r->relid, AccessShareLock);

	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("account " INT64_FORMAT " is over its new %s limit", account, r->feature),
			 errdetail_plural("Limit " INT64_FORMAT ", in use " INT64_FORMAT ": " INT64_FORMAT " row of table \"%s\" must be removed first.",
							  "Limit " INT64_FORMAT ", in use " INT64_FORMAT ": " INT64_FORMAT " rows of table \"%s\" must be removed first.",
							  (unsigned long) (used - limit),
							  limit, used, used - limit, RelationGetRelationName(rel)),
			 errhint("Remove them, then apply the downgrade again."),
			 errtable(rel)));
}

/* Does the policy have anything to trim at this use and limit? */
static bool
NeedsTrimming(Registration *r, int64 used, int64 limit, bool unlimited)
{
	if (unlimited)
		return false;
	if (r->policy == POLICY_CAP)
		return true;			/* no counter: the statement finds the values */
	if (r->policy == POLICY_DETACH)
		return limit == 0 && used > 0;
	return used > limit;
}

typedef struct TrimOutput
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	ResourceOwner owner;		/* the tuplestore's: it outlives a dry run */
} TrimOutput;

/* One result row: (action, row_id, old_value, new_value) of a feature's table. */
static void
PutTrimmedRow(TrimOutput *out, HeapTuple tuple, TupleDesc tupdesc, const char *feature, Oid relid)
{
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	ResourceOwner save_owner = CurrentResourceOwner;

	values[0] = CStringGetTextDatum(feature);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = SPI_getbinval(tuple, tupdesc, 1, &nulls[2]);
	values[3] = SPI_getbinval(tuple, tupdesc, 2, &nulls[3]);
	values[4] = SPI_getbinval(tuple, tupdesc, 3, &nulls[4]);
	values[5] = SPI_getbinval(tuple, tupdesc, 4, &nulls[5]);
	/* as PL/pgSQL's RETURN NEXT: a spilled tuplestore is the caller's */
	CurrentResourceOwner = out->owner;
	tuplestore_putvalues(out->store, out->tupdesc, values, nulls);
	CurrentResourceOwner = save_owner;
}

/* The newest id of the trimmed archive, before a statement adds to it. */
static int64
LastArchived(int64 tenant)
{
	static SPIPlanPtr last_plan[2];
	int			keyed = TenantKeyed("trimmed");
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(tenant)};
	bool		isnull;
	Datum		last;

	KeptPlan(&last_plan[keyed], keyed ? "SELECT coalesce(max(id), 0) FROM subscription.trimmed WHERE tenant_id = $1"
			 : "SELECT coalesce(max(id), 0) FROM subscription.trimmed", 1, argtypes);
	if (SPI_execute_plan(last_plan[keyed], values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the trimmed archive");
	last = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetInt64(last);
}

/*
 * The rows the guards archived as deleted by the application's foreign keys
 * since "after", as (action, row_id, old_value, new_value, feature,
 * relation) in SPI_tuptable; false when there are none.  The relation's
 * name is read here: a cast to regclass would run where the row is, on
 * Citus a worker, whose OIDs are not this node's.
 */
static bool
ReadCascades(int64 tenant, int64 subscription_id, int64 after)
{
	static SPIPlanPtr cascades_plan[2];
	int			keyed = TenantKeyed("trimmed");
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(subscription_id), Int64GetDatum(after), Int64GetDatum(tenant)};

#define CASCADES_SQL(TENANT) \
	"SELECT t.action, t.row_id, NULL::bigint, NULL::bigint, t.feature, t.relation" \
	"  FROM subscription.trimmed AS t" \
	" WHERE " TENANT "t.subscription_id = $1 AND t.id > $2 AND t.action = 'cascade'" \
	" ORDER BY t.id"
	KeptPlan(&cascades_plan[keyed], keyed ? CASCADES_SQL("t.tenant_id = $3 AND ") : CASCADES_SQL(""),
			 3, argtypes);
	if (SPI_execute_plan(cascades_plan[keyed], values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the cascaded rows");
	return SPI_processed > 0;
}

/*
 * Archive rows of a registered table, given as jsonb with their ids, in
 * subscription.trimmed: a fixed statement, as the extension's owner (the
 * caller of apply_downgrade runs it as SECURITY DEFINER).
 */
static void
Archive(int64 tenant, int64 account, int64 subscription_id, Oid relid, const char *feature, Datum action,
		Datum row_ids, Datum old_rows)
{
	static SPIPlanPtr archive_plan[2];
	int			keyed = TenantKeyed("trimmed");
	Oid			argtypes[8] = {INT8OID, INT8OID, OIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBARRAYOID, INT8OID};
	Datum		args[8];

	args[0] = Int64GetDatum(account);
	args[1] = Int64GetDatum(subscription_id);
	args[2] = ObjectIdGetDatum(relid);
	args[3] = CStringGetTextDatum(feature);
	args[4] = action;
	args[5] = row_ids;
	args[6] = old_rows;
	args[7] = Int64GetDatum(tenant);
#define ARCHIVE_SQL(COLUMN, VALUE) \
	"INSERT INTO subscription.trimmed" \
	"       (" COLUMN "account_id, subscription_id, relation, feature, action, row_id, old_row)" \
	" SELECT " VALUE "$1, $2, $3::regclass::text, $4, $5, r.row_id, r.old_row" \
	"   FROM unnest($6, $7) WITH ORDINALITY AS r(row_id, old_row, n) ORDER BY r.n"
	KeptPlan(&archive_plan[keyed], keyed ? ARCHIVE_SQL("tenant_id, ", "$8, ") : ARCHIVE_SQL("", ""), 8, argtypes);
	if (SPI_execute_plan(archive_plan[keyed], args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not archive the rows trimmed from %s", get_rel_name(relid));
}

/*
 * A trimmed table's name, as subscription.trimming carries it: OIDs differ
 * between Citus' nodes, names do not.
 */
static char *
TrimmedName(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
}

/*
 * On Citus, a trim's DELETE runs on the tenant's worker, in a session of
 * its own: the application's foreign keys cascade there, and the guards of
 * the tables they delete from run there, where TrimmingSubscription (this
 * backend's) is 0.  The trim's context goes along as subscription.trimming,
 * "subscription tenant account relation", SET LOCAL: propagate.c's hook
 * hands it to Citus, which sends it to the transaction's nodes (in a
 * transaction block, and from this function in autocommit too); NULL sets
 * it back.
 */
static void
SetTrimming(const char *value)
{
	if (SPI_execute(value != NULL ? psprintf("SET LOCAL subscription.trimming = %s", quote_literal_cstr(value))
					: "SET LOCAL subscription.trimming = DEFAULT", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not set subscription.trimming");
}

/*
 * Whether a guard of relid runs under a trim of another session of the
 * transaction, named by subscription.trimming, that trims another table:
 * then the rows it deletes are a cascade, archived at once, under the
 * trim's tenant, account and subscription, once the guard has checked
 * that they are that trim's (limits.c, RefuseForeignTrimming).  Only a
 * guard on a Citus shard reads the setting: anywhere else (a single
 * server, a table of the coordinator) a trim runs in this backend
 * (TrimmingSubscription) and the setting, which any session can set, is
 * ignored entirely (issue 17).
 */
bool
TrimmingElsewhere(int64 *tenant, int64 *account, int64 *subscription_id, Oid relid)
{
	const char *text = subscription_trimming;
	char	   *end;

	if (text == NULL || text[0] == '\0' || LogicalRelation(relid) == relid)
		return false;
	errno = 0;
	*subscription_id = strtoi64(text, &end, 10);
	if (end != text && *end == ' ')
		*tenant = strtoi64(end + 1, &end, 10);
	if (end != text && *end == ' ')
		*account = strtoi64(end + 1, &end, 10);
	if (errno != 0 || end == text || *end != ' ' || end[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subscription.trimming is malformed"),
				 errdetail("subscription.trimming is \"%s\"; apply_downgrade() sets it, to "
						   "\"subscription tenant account relation\".", text)));
	return strcmp(end + 1, TrimmedName(LogicalRelation(relid))) != 0;
}

/* Rows a cascade deleted with a trimmed row, archived (action 'cascade'). */
void
ArchiveCascaded(int64 tenant, int64 account, int64 subscription_id, CascadedRows *c)
{
	Archive(tenant, account, subscription_id, c->relid, c->feature, CStringGetTextDatum("cascade"),
			c->row_ids, c->old_rows);
}

/*
 * Whether a table is trimmed through shard_trim: a distributed table, from
 * the coordinator (on the tenant's node, in a delegated call, its shards
 * are local and trimmed directly).
 */
static bool
TrimOnNode(Oid relid)
{
	bool		isnull;

	if (!CitusTable(relid))
		return false;
	if (SPI_execute("SELECT subscription.on_citus_worker()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not ask whether this is a Citus worker");
	return !DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Trim one registered table as its owner, restricted (identity.c): the
 * owner's triggers, casts and foreign-key actions run with the owner's
 * rights.  Then the extension archives what changed, from plain values.
 */
static void
TrimTable(Registration *r, int64 tenant, int64 account, int64 limit, int64 subscription_id, TrimOutput *out)
{
	Oid			trim_argtypes[TRIM_NARGS] = {INT8OID, INT8OID};
	Datum		trim_args[TRIM_NARGS];
	bool		isnull;
	ListCell   *lc;
	Relation	rel;
	IdentitySwitch owner;
	ArrayBuildState *row_ids;
	ArrayBuildState *old_rows;
	SPITupleTable *trimmed;
	uint64		ntrimmed;
	uint64		i;
	bool		citus = CitusPresent();

	trim_args[0] = Int64GetDatum(account);
	trim_args[1] = Int64GetDatum(limit);
	rel = relation_open(r->relid, AccessShareLock);
	/* the trimmed row's id, as the limit guard archives a cascade's rows */
	r->row_id = RowIdText(rel, "t");
	if (r->row_id == NULL)
		r->row_id = "t.ctid::text";
	if (citus)
		SetTrimming(psprintf(INT64_FORMAT " " INT64_FORMAT " " INT64_FORMAT " %s",
							 subscription_id, tenant, account, TrimmedName(r->relid)));
	if (citus && TrimOnNode(r->relid))
	{
		/*
		 * On the coordinator, a distributed table is trimmed on the node of
		 * the tenant's shards, as its owner there (shard_trim), over the
		 * connection of the extension's owner that writes the tenant's
		 * shard group before and after: Citus refuses a shard group written
		 * over connections of two roles in one transaction.
		 */
		if (SPI_execute(psprintf("SELECT t.action, t.row_id, t.old_value, t.new_value, t.old_row"
								 "  FROM subscription.account AS a,"
								 "       LATERAL subscription.shard_trim(a.tableoid::pg_catalog.regclass,"
								 "                                       %s::pg_catalog.regclass, %s,"
								 "                                       " INT64_FORMAT ", " INT64_FORMAT ") AS t"
								 " WHERE a.tenant_id OPERATOR(pg_catalog.=) " INT64_FORMAT
								 "   AND a.id OPERATOR(pg_catalog.=) " INT64_FORMAT,
								 quote_literal_cstr(r->relation), quote_literal_cstr(r->feature),
								 account, limit, tenant, tenant),
						false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not trim table %s", r->relation);
	}
	else
	{
		BecomeTableOwner(rel, &owner);
		TrimmingRelation = r->relid;
		if (SPI_execute_with_args(TrimStatement(r), TRIM_NARGS, trim_argtypes, trim_args, NULL, false, 0)
			!= SPI_OK_SELECT)
			elog(ERROR, "could not trim table %s", r->relation);
		TrimmingRelation = InvalidOid;
		RestoreIdentity(&owner);
	}
	trimmed = SPI_tuptable;
	ntrimmed = SPI_processed;
	if (citus)
		SetTrimming(NULL);		/* a statement of its own: SPI_tuptable is kept above */
	relation_close(rel, NoLock);
	if (ntrimmed == 0)
		return;					/* and so no cascade either */

	row_ids = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	old_rows = initArrayResult(JSONBOID, CurrentMemoryContext, false);
	for (i = 0; i < ntrimmed; i++)
	{
		bool		row_id_null;
		bool		old_row_null;
		Datum		row_id = SPI_getbinval(trimmed->vals[i], trimmed->tupdesc, 2, &row_id_null);
		Datum		old_row = SPI_getbinval(trimmed->vals[i], trimmed->tupdesc, 5, &old_row_null);

		accumArrayResult(row_ids, row_id, row_id_null, TEXTOID, CurrentMemoryContext);
		accumArrayResult(old_rows, old_row, old_row_null, JSONBOID, CurrentMemoryContext);
		PutTrimmedRow(out, trimmed->vals[i], trimmed->tupdesc, r->feature, r->relid);
	}

	Archive(tenant, account, subscription_id, r->relid, r->feature,
			SPI_getbinval(trimmed->vals[0], trimmed->tupdesc, 1, &isnull),
			makeArrayResult(row_ids, CurrentMemoryContext),
			makeArrayResult(old_rows, CurrentMemoryContext));

	/* then, after them, what the application's foreign keys deleted with them */
	foreach(lc, TrimmingCascades)
		ArchiveCascaded(tenant, account, subscription_id, (CascadedRows *) lfirst(lc));
	TrimmingCascades = NIL;
}

/*
 * Every statement names the tenant (issue 17): on Citus it runs on the
 * tenant's shard group, where a delegated call or a trigger must stay.
 */
static void
ApplyDowngrade(int64 tenant, int64 subscription_id, TrimOutput *out)
{
	static SPIPlanPtr subscription_plan[2];
	static SPIPlanPtr authorize_plan[2];
	static SPIPlanPtr features_plan = NULL;
	static SPIPlanPtr limit_plan[2];
	static SPIPlanPtr missing_plan[2];
	static SPIPlanPtr lock_counters_plan[2];
	static SPIPlanPtr pending_plan[2];

	/* a 1.0 schema, between a package upgrade and ALTER EXTENSION UPDATE, has no tenant key */
	int			keyed = TenantKeyed("subscription");
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		args[2];
	Oid			counter_argtypes[4] = {INT8OID, INT8OID, TEXTOID, INT8OID};
	Datum		counter_args[4];
	char		counter_nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	bool		pending;
	int64		account;
	char	   *status;
	List	   *registrations;
	List	   *features = NIL;
	ListCell   *lc;
	int64		last_archived;
	uint64		i;

	args[0] = Int64GetDatum(tenant);
	args[1] = Int64GetDatum(subscription_id);
#define SUBSCRIPTION_SQL(TENANT) \
	"SELECT account_id, status, pending_plan IS NOT NULL FROM subscription.subscription" \
	" WHERE " TENANT "id = $2 FOR NO KEY UPDATE"
	KeptPlan(&subscription_plan[keyed], keyed ? SUBSCRIPTION_SQL("tenant_id = $1 AND ") : SUBSCRIPTION_SQL(""),
			 2, argtypes);
	if (SPI_execute_plan(subscription_plan[keyed], args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription " INT64_FORMAT, subscription_id);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("subscription " INT64_FORMAT " does not exist", subscription_id)));
	account = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	status = GetText(0, 2);
	pending = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	args[1] = Int64GetDatum(account);
	KeptPlan(&authorize_plan[keyed], keyed ? "SELECT subscription.authorize($1, $2, 'change_plan', false)"
			 : "SELECT subscription.authorize($2, 'change_plan')", 2, argtypes);
	if (SPI_execute_plan(authorize_plan[keyed], args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the actor's rights");
	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription " INT64_FORMAT " is %s", subscription_id, status),
				 errdetail("apply_downgrade() trims for active subscriptions only.")));

	/*
	 * The account's counters are locked in feature order: from here the
	 * account's writers wait for us.  When the plan changes, every registered
	 * feature gets its counter first, so that a writer's first row waits too
	 * and then meets the new limit.  Without a pending plan the limits stay,
	 * and a missing counter is created only where there is something to count
	 * (CountAndLock): a downgrade with nothing to trim writes nothing.  One
	 * statement of plain values per counter: Citus routes no INSERT whose
	 * rows come from a reference table.
	 */
	counter_args[0] = Int64GetDatum(tenant);
	counter_args[1] = Int64GetDatum(account);
	if (pending)
	{
		KeptPlan(&features_plan, "SELECT feature FROM subscription.limited_table ORDER BY feature", 0, NULL);
		if (SPI_execute_plan(features_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the limit registrations");
		for (i = 0; i < SPI_processed; i++)
			features = lappend(features, GetText(i, 1));
	}
	foreach(lc, features)
	{
		counter_args[2] = CStringGetTextDatum((char *) lfirst(lc));
		KeptPlan(&limit_plan[keyed], keyed ? "SELECT subscription.limit_of($1, $2, $3)"
				 : "SELECT subscription.limit_of($2, $3)", 3, counter_argtypes);
		if (SPI_execute_plan(limit_plan[keyed], counter_args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the %s limit of account " INT64_FORMAT, (char *) lfirst(lc), account);
		counter_args[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		counter_nulls[3] = isnull ? 'n' : ' ';
		KeptPlan(&missing_plan[keyed], keyed
				 ? "INSERT INTO subscription.usage_counter (tenant_id, account_id, feature, limit_value)"
				 " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
				 : "INSERT INTO subscription.usage_counter (account_id, feature, limit_value)"
				 " VALUES ($2, $3, $4) ON CONFLICT DO NOTHING", 4, counter_argtypes);
		if (SPI_execute_plan(missing_plan[keyed], counter_args, counter_nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not create the usage counters");
	}
#define LOCK_COUNTERS_SQL(TENANT) \
	"SELECT count(*) FROM (SELECT FROM subscription.usage_counter" \
	"                       WHERE " TENANT "account_id = $2 ORDER BY feature FOR UPDATE) AS locked"
	KeptPlan(&lock_counters_plan[keyed], keyed ? LOCK_COUNTERS_SQL("tenant_id = $1 AND ") : LOCK_COUNTERS_SQL(""),
			 2, argtypes);
	if (SPI_execute_plan(lock_counters_plan[keyed], args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the usage counters");

	/* the pending plan takes effect; the stored limits follow it */
	args[1] = Int64GetDatum(subscription_id);
#define PENDING_SQL(TENANT) \
	"UPDATE subscription.subscription SET plan = pending_plan, pending_plan = NULL" \
	" WHERE " TENANT "id = $2 AND pending_plan IS NOT NULL"
	KeptPlan(&pending_plan[keyed], keyed ? PENDING_SQL("tenant_id = $1 AND ") : PENDING_SQL(""), 2, argtypes);
	if (SPI_execute_plan(pending_plan[keyed], args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not apply the pending plan");

	/*
	 * What follows reads the limits of the new plan: in a snapshot that sees
	 * it (a read-only statement of the recount, run on this node when Citus
	 * delegated the call, takes the active snapshot as it is)
	 */
	PushActiveSnapshot(GetTransactionSnapshot());

	TrimmingAccount = account;
	TrimmingSubscription = subscription_id;
	registrations = ReadRegistrations();
	foreach(lc, registrations)
	{
		Registration *r = (Registration *) lfirst(lc);
		int64		used;
		int64		limit;
		bool		unlimited;

		CountAndLock(r, tenant, account);
		ReadCounter(tenant, account, r->feature, &used, &limit, &unlimited);
		if (!NeedsTrimming(r, used, limit, unlimited))
			continue;
		if (r->policy == POLICY_BLOCK)
			RefuseBlockedDowngrade(r, account, used, limit);
		/*
		 * The references are counted as the limited table's owner: a table of
		 * another owner would run its row security as that owner.
		 */
		if (r->policy == POLICY_KEEP_MOST_REFERENCED && r->foreign_owned != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("table %s references %s but has another owner", r->foreign_owned, r->relation),
					 errdetail("Policy keep_most_referenced counts references as the owner of %s.", r->relation),
					 errhint("Give both tables one owner, or register feature \"%s\" with another policy.",
							 r->feature)));

		last_archived = LastArchived(tenant);
		TrimTable(r, tenant, account, limit, subscription_id, out);

		/* and what the application's foreign keys deleted with them */
		if (ReadCascades(tenant, subscription_id, last_archived))
			for (i = 0; i < SPI_processed; i++)
				PutTrimmedRow(out, SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
							  GetText(i, 5),
							  DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(GetText(i, 6)))));
	}
	PopActiveSnapshot();
}

/*
 * apply_downgrade(subscription_id bigint, dry_run boolean)
 *		RETURNS TABLE (feature, relation, action, row_id, old_value, new_value)
 */
Datum
apply_downgrade(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TrimOutput	out;
	bool		dry_run;
	int64		tenant;
	MemoryContext caller_context;

	/* the keyed form (tenant_id, subscription_id, dry_run) names the tenant first */
	int			first = PG_NARGS() == 3 ? 1 : 0;

	if (PG_ARGISNULL(first) || PG_ARGISNULL(first + 1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("apply_downgrade() requires a non-NULL %s",
						PG_ARGISNULL(first) ? "subscription_id" : "dry_run")));
	dry_run = PG_GETARG_BOOL(first + 1);

	InitMaterializedSRF(fcinfo, 0);
	out.store = rsinfo->setResult;
	out.tupdesc = rsinfo->setDesc;
	out.owner = CurrentResourceOwner;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	caller_context = CurrentMemoryContext;
	/*
	 * the keyed form's check: a subscription of that tenant (22023); the
	 * unkeyed form finds the tenant (an unknown subscription: P0002 then)
	 */
	if (first == 1)
	{
		RequireTenant("apply_downgrade", fcinfo, "subscription", 1);
		tenant = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	}
	else if (!TenantKeyed("subscription") || !TenantOf("subscription", PG_GETARG_INT64(0), &tenant))
		tenant = 0;				/* 1.0: no tenant key */
	if (dry_run)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(caller_context);
	}

	PG_TRY();
	{
		ApplyDowngrade(tenant, PG_GETARG_INT64(first), &out);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		TrimmingAccount = 0;
		TrimmingSubscription = 0;
		TrimmingRelation = InvalidOid;
		TrimmingCascades = NIL;
		if (!dry_run)
			PG_RE_THROW();
		/* the caller's error handling expects its own subtransaction on top */
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = out.owner;
		ReThrowError(edata);
	}
	PG_END_TRY();
	TrimmingAccount = 0;
	TrimmingSubscription = 0;

	if (dry_run)
	{
		/* C12: the preview changed nothing */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = out.owner;
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * shard_trim(account_shard regclass, relation regclass, feature text,
 *			  account bigint, lim bigint)
 *		RETURNS TABLE (action text, row_id text, old_value bigint,
 *					   new_value bigint, old_row jsonb)
 *
 * On a Citus node: apply_downgrade's trim of one account in the shard of
 * a limited table colocated with account_shard (a shard of
 * subscription.account on this node), as the table's owner (the shard's),
 * its statement naming this node's shards only; returns the trimmed rows
 * as TrimTable reads them.  The coordinator's TrimTable calls it, in the
 * transaction of apply_downgrade, whose subscription.trimming the guards
 * of the cascades read here.
 */
Datum
shard_trim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		args[2];
	Oid			trim_argtypes[TRIM_NARGS] = {INT8OID, INT8OID};
	Datum		trim_args[TRIM_NARGS];
	Oid			account_shard;
	Oid			relid;
	Oid			shard;
	Relation	shard_rel;
	Registration *r = NULL;
	IdentitySwitch owner;
	int			nest;
	uint64		i;

	for (i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("shard_trim() requires non-NULL arguments")));
	/* the coordinator's apply_downgrade calls it, as the extension's owner */
	if (GetUserId() != ExtensionOwner() && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("shard_trim() runs only as the extension's owner"),
				 errhint("Use subscription.apply_downgrade().")));
	account_shard = PG_GETARG_OID(0);
	relid = PG_GETARG_OID(1);
	trim_args[0] = PG_GETARG_DATUM(3);
	trim_args[1] = PG_GETARG_DATUM(4);
	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	shard = NodeShardOf(account_shard, relid);
	shard_rel = relation_open(shard, AccessShareLock);

	/*
	 * limited_table is a reference table whose placement is on this node,
	 * which Citus reads inside a shard's query only if told to (as
	 * shard_usage does); for this read only
	 */
	args[0] = ObjectIdGetDatum(shard);
	args[1] = PG_GETARG_DATUM(2);
	nest = NewGUCNestLevel();
	(void) set_config_option("citus.allow_nested_distributed_execution", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_execute_with_args(SHARD_REGISTRATION_SQL, 2, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the limit registrations");
	if (SPI_processed == 1)
		r = RegistrationOf(0);
	AtEOXact_GUC(true, nest);
	if (r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feature \"%s\" is not enforced on table \"%s\"",
						text_to_cstring(PG_GETARG_TEXT_PP(2)), get_rel_name(relid))));
	r->row_id = RowIdText(shard_rel, "t");
	if (r->row_id == NULL)
		r->row_id = "t.ctid::text";
	BecomeTableOwner(shard_rel, &owner);
	if (SPI_execute_with_args(TrimStatement(r), TRIM_NARGS, trim_argtypes, trim_args, NULL, false, 0)
		!= SPI_OK_SELECT)
		elog(ERROR, "could not trim table %s", r->relation);
	RestoreIdentity(&owner);
	SPIRowsToResult(rsinfo);
	relation_close(shard_rel, NoLock);
	SPI_finish();
	return (Datum) 0;
}
