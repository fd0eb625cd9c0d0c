/*-------------------------------------------------------------------------
 *
 * history.c
 *	  The one writer of a history row (R8).
 *
 * Every row of subscription.history that the extension writes is written
 * by RecordHistory(): the statement trigger record_history() and the
 * license guard's statement path through RecordQueriedHistory(),
 * erase_account() and the extension's SQL through
 * subscription.write_history() (one row) and write_histories() (several
 * rows of one account in one statement: record_payment's), the license
 * guard's one-row and TRUNCATE paths directly.  The writer gives the operation,
 * the account, the subscription and the details; RecordHistory() adds the
 * actor (CurrentActor(): subscription.actor, else the session user), and
 * the table's defaults fill the rest as for an INSERT: the id, the time,
 * and the database roles db_user (calling_role()) and db_session_user.
 * So every path records the same columns the same way.
 *
 * One row at a time, by rowwrite.c, as the extension's owner: a set-based
 * writer (a statement-level trigger over its transition table) computes
 * its rows in one query and RecordQueriedHistory() writes them, as
 * record_history() and the license guard do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(write_history);
PG_FUNCTION_INFO_V1(write_histories);
PG_FUNCTION_INFO_V1(record_history);

/*
 * Write one history row into table (subscription.history) of w.  A NULL
 * account_id or subscription_id leaves that column NULL; details is a jsonb.
 * The tenant (docs/design.md#tenant-keys), when the caller knows it: else,
 * on Citus, where the row is routed by it, the account's own id (a root
 * account's, as the application tables' rows name it) or 0 without an
 * account; on a single server fill_tenant_id() reads it.  A 1.0 schema has
 * no tenant key.
 */
void
RecordHistory(RowWrites *w, int table, const char *operation, const int64 *tenant_id,
			  const int64 *account_id, const int64 *subscription_id, Datum details)
{
	Relation	history = RowWriteRelation(w, table);
	TupleTableSlot *row = RowWriteNewSlot(w, table);
	bool	   *given = palloc0(sizeof(bool) * RelationGetDescr(history)->natts);

	if (tenant_id != NULL)
		SetRowColumn(row, given, history, "tenant_id", Int64GetDatum(*tenant_id));
	else if (CitusTable(RelationGetRelid(history)))
		SetRowColumn(row, given, history, "tenant_id", Int64GetDatum(account_id != NULL ? *account_id : 0));
	SetRowColumn(row, given, history, "actor", PointerGetDatum(CurrentActor()));
	SetRowColumn(row, given, history, "operation", CStringGetTextDatum(operation));
	if (account_id != NULL)
		SetRowColumn(row, given, history, "account_id", Int64GetDatum(*account_id));
	if (subscription_id != NULL)
		SetRowColumn(row, given, history, "subscription_id", Int64GetDatum(*subscription_id));
	SetRowColumn(row, given, history, "details", details);
	InsertRow(w, table, row, given);
	pfree(given);
}

/* only the extension's owner writes history through SQL (R8) */
static void
RequireHistoryWriter(void)
{
	if (GetUserId() != ExtensionOwner())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only the extension's own functions write history"),
				 errhint("History is written by the functions that make the changes.")));
}

/*
 * write_history(operation text, account_id bigint, subscription_id bigint,
 *				 details jsonb, tenant_id bigint DEFAULT NULL) returns void
 *
 * RecordHistory() for the extension's SQL.  Only the extension's owner
 * writes history (its SECURITY DEFINER functions and triggers, the
 * guards): rowwrite.c writes as the owner would.
 */
Datum
write_history(PG_FUNCTION_ARGS)
{
	RowWrites  *w;
	Oid			relid;
	int64		account_id;
	int64		subscription_id;
	int64		tenant_id;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of write_history() must not be null",
						PG_ARGISNULL(0) ? "operation" : "details")));
	RequireHistoryWriter();
	account_id = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	subscription_id = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	tenant_id = PG_NARGS() > 4 && !PG_ARGISNULL(4) ? PG_GETARG_INT64(4) : 0;

	relid = OwnTable("history");
	w = BeginRowWrites(1, &relid);
	RecordHistory(w, 0, text_to_cstring(PG_GETARG_TEXT_PP(0)),
				  PG_NARGS() > 4 && !PG_ARGISNULL(4) ? &tenant_id : NULL,
				  PG_ARGISNULL(1) ? NULL : &account_id,
				  PG_ARGISNULL(2) ? NULL : &subscription_id,
				  PG_GETARG_DATUM(3));
	EndRowWrites(w);
	PG_RETURN_VOID();
}

/* the elements of a one-dimensional array argument, NULLs flagged */
static int
HistoryArray(FunctionCallInfo fcinfo, int arg, Oid type, Datum **values, bool **nulls)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(arg);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n;

	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the arrays of write_histories() must be of one dimension and of the same length")));
	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	deconstruct_array(a, type, typlen, typbyval, typalign, values, nulls, &n);
	return n;
}

/*
 * write_histories(operations text[], account_id bigint, subscription_id
 *				   bigint, details jsonb[], in_tenant bigint) returns void
 *
 * Several history rows of one account and subscription (an invoice's),
 * operation k with details k, in that order, by RecordHistory() in one
 * RowWrites: one statement for history's AFTER INSERT statement trigger,
 * so one write of their events (history_event).  A change that writes
 * several rows at one point (record_payment: the invoice's opening, the
 * payment, the invoice's status) pays the writer and the trigger once.
 * The columns as write_history() writes them; the extension's owner only.
 */
Datum
write_histories(PG_FUNCTION_ARGS)
{
	Datum	   *operations;
	Datum	   *details;
	bool	   *no_operation;
	bool	   *no_details;
	int64		account_id;
	int64		subscription_id;
	int64		tenant_id;
	int			n;
	int			i;
	Oid			relid;
	RowWrites  *w;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of write_histories() must not be null",
						PG_ARGISNULL(0) ? "operations" : "details")));
	RequireHistoryWriter();
	n = HistoryArray(fcinfo, 0, TEXTOID, &operations, &no_operation);
	if (HistoryArray(fcinfo, 3, JSONBOID, &details, &no_details) != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the arrays of write_histories() must be of one dimension and of the same length")));
	for (i = 0; i < n; i++)
		if (no_operation[i] || no_details[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a history row must have its operation and details")));
	if (n == 0)
		PG_RETURN_VOID();
	account_id = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	subscription_id = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	tenant_id = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);

	relid = OwnTable("history");
	w = BeginRowWrites(1, &relid);
	for (i = 0; i < n; i++)
		RecordHistory(w, 0, TextDatumGetCString(operations[i]),
					  PG_ARGISNULL(4) ? NULL : &tenant_id,
					  PG_ARGISNULL(1) ? NULL : &account_id,
					  PG_ARGISNULL(2) ? NULL : &subscription_id,
					  details[i]);
	EndRowWrites(w);
	PG_RETURN_VOID();
}

/*
 * Write the history rows that the last query returned (operation,
 * account_id, subscription_id, details, tenant_id), in its order, by the
 * one writer.  With accounts_by_subscription, a row's account is its
 * subscription's (an add-on batch's history): looked up by the tenant and
 * the subscription's id, without a query, so that on Citus the lookup
 * stays on the tenant's shard (issue 17); NULL once the subscription is
 * gone.
 */
void
RecordQueriedHistory(bool accounts_by_subscription)
{
	SPITupleTable *rows = SPI_tuptable;
	uint64		nrows = SPI_processed;
	Oid			relids[2];
	RowWrites  *w;
	uint64		i;

	if (nrows == 0)
		return;
	relids[0] = OwnTable("history");
	relids[1] = OwnTable("subscription");
	w = BeginRowWrites(accounts_by_subscription ? 2 : 1, relids);
	for (i = 0; i < nrows; i++)
	{
		bool		no_account;
		bool		no_subscription;
		bool		isnull;
		int64		account_id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 2, &no_account));
		int64		subscription_id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 3,
																  &no_subscription));
		bool		no_tenant = true;
		int64		tenant_id = 0;

		/* the tenant, a fifth column (NULL on a 1.0 schema) */
		if (rows->tupdesc->natts >= 5)
			tenant_id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 5, &no_tenant));
		if (accounts_by_subscription && !no_subscription)
		{
			Relation	subscriptions = RowWriteRelation(w, 1);
			TupleTableSlot *subscription = RowWriteStoredSlot(w, 1);
			Datum		key = Int64GetDatum(subscription_id);

			no_account = !FetchRowByTenantKey(subscriptions, RowWriteSnapshot(w), no_tenant ? NULL : &tenant_id,
											  1, &key, subscription);
			if (!no_account)
				account_id = DatumGetInt64(slot_getattr(subscription, RowWriteColumn(subscriptions, "account_id"),
														&no_account));
			ExecClearTuple(subscription);
		}
		RecordHistory(w, 0, SPI_getvalue(rows->vals[i], rows->tupdesc, 1),
					  no_tenant ? NULL : &tenant_id,
					  no_account ? NULL : &account_id,
					  no_subscription ? NULL : &subscription_id,
					  SPI_getbinval(rows->vals[i], rows->tupdesc, 4, &isnull));
	}
	EndRowWrites(w);
}

/* the tables record_history() records (Z11), and who a row's account is */
#define HISTORY_NUM_TABLES 5
static const struct
{
	const char *table;
	const char *account;		/* of the row as jsonb, x.r */
	const char *subscription;
	const char *updated;		/* an UPDATE's details: the changed columns, d.changed */
}			history_tables[HISTORY_NUM_TABLES] =
{
	{"account", "(x.r ->> 'id')::bigint", "NULL::bigint", "d.changed"},
	{"member", "(x.r ->> 'account_id')::bigint", "NULL::bigint", "d.changed"},
	{"subscription", "(x.r ->> 'account_id')::bigint", "(x.r ->> 'id')::bigint", "d.changed"},

	/*
	 * the subscription's account, looked up by RecordQueriedHistory(); an
	 * UPDATE also names the batch, which the subscription does not (the
	 * addon.ended event's batch_id, issue 20)
	 */
	{"addon_batch", "NULL::bigint", "(x.r ->> 'subscription_id')::bigint",
	"d.changed OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('batch_id', x.r -> 'id')"},
	{"terms_acceptance", "(x.r ->> 'account_id')::bigint", "NULL::bigint", "d.changed"},
};

/*
 * The query of a table's history rows for one event, over the transition
 * tables, in the order the statement changed the rows: the row as the
 * application knows it (its tenant key is the history row's own), on an
 * UPDATE only the changed columns as {"column": {"old": .., "new": ..}}
 * (an add-on batch's with its "batch_id"),
 * and no row for an UPDATE that changed nothing.  An UPDATE's old and new
 * rows are paired by their places, the transition tables read once each
 * into arrays side by side: the plan is kept, and a join of the two on a
 * row_number(), planned for the first statement's few rows, was a nested
 * loop that read the new rows again for each old one (quadratic: 0.6 s
 * for a set-based renewal of 280 subscriptions, issue 20).  A restore ($1) copies a
 * row's history with it (restored_copy); a row without an id of its own
 * (terms_acceptance) is copied whole by the restoring role.  It reads the
 * transition tables alone: on Citus they are not joined with a distributed
 * table (issue 17).
 */
static char *
HistoryQuery(int t, GuardedEvent event)
{
	const char *table = history_tables[t].table;

	if (event == GUARDED_UPDATE)
		return psprintf("SELECT '%s_update', %s, %s, %s, x.tenant_id"
						"  FROM ROWS FROM ("
						"       pg_catalog.unnest(ARRAY(SELECT to_jsonb(o) - 'tenant_id' FROM old_rows AS o)),"
						"       pg_catalog.unnest(ARRAY(SELECT n.tenant_id FROM new_rows AS n)),"
						"       pg_catalog.unnest(ARRAY(SELECT to_jsonb(n) - 'tenant_id' FROM new_rows AS n)))"
						"       WITH ORDINALITY AS x (o, tenant_id, r, i)"
						"  CROSS JOIN LATERAL"
						"       (SELECT pg_catalog.jsonb_object_agg(k.key, pg_catalog.jsonb_build_object("
						"                   'old', x.o -> k.key, 'new', k.value)) AS changed"
						"          FROM pg_catalog.jsonb_each(x.r) AS k"
						"         WHERE k.value IS DISTINCT FROM x.o -> k.key) AS d"
						" WHERE d.changed IS NOT NULL"
						" ORDER BY x.i",
						table, history_tables[t].account, history_tables[t].subscription,
						history_tables[t].updated);
	return psprintf("SELECT '%s_%s', %s, %s, x.r, x.tenant_id"
					"  FROM (SELECT t.tenant_id, to_jsonb(t) - 'tenant_id' AS r FROM %s AS t) AS x"
					" WHERE NOT ($1 AND (NOT x.r ? 'id'"
					"                    OR subscription.restored_copy("
					"                           pg_catalog.format('subscription.%%I', '%s_id_seq')::regclass,"
					"                           (x.r ->> 'id')::bigint)))",
					table, event == GUARDED_INSERT ? "insert" : "delete",
					history_tables[t].account, history_tables[t].subscription,
					event == GUARDED_INSERT ? "new_rows" : "old_rows", table);
}

/*
 * record_history: AFTER INSERT, UPDATE or DELETE ... FOR EACH STATEMENT
 * trigger of account, member, subscription, addon_batch and
 * terms_acceptance, its argument the logical table (on Citus a shard's own
 * name is not the table's, issue 17): one history row per changed row
 * (R8, Z11), from one query over the transition tables.  The extension's
 * own bookkeeping: it writes as the extension's owner, the writer needs no
 * right on history.
 */
Datum
record_history(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[HISTORY_NUM_TABLES][GUARD_NUM_ROW_EVENTS];
	TriggerData *trigdata;
	Tuplestorestate *rows;
	GuardedEvent event;
	Oid			argtypes[1] = {BOOLOID};
	Datum		values[1];
	IdentitySwitch s;
	int			t;

	event = ClassifyGuardedStatement(fcinfo, "record_history", &rows);
	trigdata = (TriggerData *) fcinfo->context;
	for (t = 0; t < HISTORY_NUM_TABLES; t++)
		if (trigdata->tg_trigger->tgnargs == 1
			&& strcmp(trigdata->tg_trigger->tgargs[0], history_tables[t].table) == 0)
			break;
	if (event == GUARDED_TRUNCATE || t == HISTORY_NUM_TABLES)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("record_history() must be fired by an INSERT, UPDATE or DELETE of a table it records")));
	if (tuplestore_tuple_count(rows) == 0)
		return PointerGetDatum(NULL);

	/* asked before the identity changes (a restore is the caller's) */
	values[0] = BoolGetDatum(event == GUARDED_INSERT && RestoringRole());

	BecomeExtensionOwner(&s);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition tables");
	if (plans[t][event] == NULL)
		KeptPlan(&plans[t][event], HistoryQuery(t, event), 1, argtypes);
	if (SPI_execute_plan(plans[t][event], values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the changed rows of %s", history_tables[t].table);
	RecordQueriedHistory(strcmp(history_tables[t].table, "addon_batch") == 0);
	SPI_finish();
	RestoreIdentity(&s);

	return PointerGetDatum(NULL);
}
