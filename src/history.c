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
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
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
PG_FUNCTION_INFO_V1(write_histories_of);
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
	TupleTableSlot *row = RowWriteSpareSlot(w, table);
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
 * write_histories(operations text[], account_ids bigint[],
 *					  subscription_ids bigint[], details jsonb[],
 *					  tenant_ids bigint[]) returns void
 *
 * History rows of any accounts, subscriptions and tenants, row k with
 * operation k, account k, subscription k (NULL: none), details k and
 * tenant k, in that order, by RecordHistory() in one RowWrites: one
 * statement for history's AFTER INSERT statement trigger, so one write of
 * their events.  The openings of a transaction's invoices
 * (announce_invoices, issue 18) pay the writer and the trigger once, not
 * once per invoice.  The columns as write_history() writes them; the
 * extension's owner only.
 */
Datum
write_histories_of(PG_FUNCTION_ARGS)
{
	Datum	   *operations;
	Datum	   *accounts;
	Datum	   *subscriptions;
	Datum	   *details;
	Datum	   *tenants;
	bool	   *no_operation;
	bool	   *no_account;
	bool	   *no_subscription;
	bool	   *no_details;
	bool	   *no_tenant;
	int			n;
	int			i;
	Oid			relid;
	RowWrites  *w;

	for (i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the arguments of write_histories() must not be null")));
	RequireHistoryWriter();
	n = HistoryArray(fcinfo, 0, TEXTOID, &operations, &no_operation);
	if (HistoryArray(fcinfo, 1, INT8OID, &accounts, &no_account) != n
		|| HistoryArray(fcinfo, 2, INT8OID, &subscriptions, &no_subscription) != n
		|| HistoryArray(fcinfo, 3, JSONBOID, &details, &no_details) != n
		|| HistoryArray(fcinfo, 4, INT8OID, &tenants, &no_tenant) != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the arrays of write_histories() must be of one dimension and of the same length")));
	for (i = 0; i < n; i++)
		if (no_operation[i] || no_details[i] || no_tenant[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a history row must have its operation, details and tenant")));
	if (n == 0)
		PG_RETURN_VOID();

	relid = OwnTable("history");
	w = BeginRowWrites(1, &relid);
	for (i = 0; i < n; i++)
	{
		int64		tenant_id = DatumGetInt64(tenants[i]);
		int64		account_id = no_account[i] ? 0 : DatumGetInt64(accounts[i]);
		int64		subscription_id = no_subscription[i] ? 0 : DatumGetInt64(subscriptions[i]);

		RecordHistory(w, 0, TextDatumGetCString(operations[i]), &tenant_id,
					  no_account[i] ? NULL : &account_id,
					  no_subscription[i] ? NULL : &subscription_id,
					  details[i]);
	}
	EndRowWrites(w);
	PG_RETURN_VOID();
}

/*
 * The writes of a statement's history rows: history, and the subscriptions
 * whose accounts an add-on batch's rows are looked up in.
 */
static RowWrites *
BeginHistoryWrites(bool accounts_by_subscription)
{
	Oid			relids[2];

	relids[0] = OwnTable("history");
	relids[1] = OwnTable("subscription");
	return BeginRowWrites(accounts_by_subscription ? 2 : 1, relids);
}

/*
 * One history row of a statement's: with accounts_by_subscription, a row's
 * account is its subscription's (an add-on batch's history): looked up by
 * the tenant and the subscription's id, without a query, so that on Citus
 * the lookup stays on the tenant's shard (issue 17); NULL once the
 * subscription is gone.
 */
static void
RecordHistoryRow(RowWrites *w, bool accounts_by_subscription, const char *operation, const int64 *tenant_id,
				 const int64 *account_id, const int64 *subscription_id, Datum details)
{
	int64		subscription_account;

	if (accounts_by_subscription && subscription_id != NULL)
	{
		Relation	subscriptions = RowWriteRelation(w, 1);
		TupleTableSlot *subscription = RowWriteStoredSlot(w, 1);
		Datum		key = Int64GetDatum(*subscription_id);
		bool		no_account;

		no_account = !FetchRowByTenantKey(subscriptions, RowWriteSnapshot(w), tenant_id, 1, &key, subscription);
		if (!no_account)
			subscription_account = DatumGetInt64(slot_getattr(subscription,
															  RowWriteColumn(subscriptions, "account_id"),
															  &no_account));
		ExecClearTuple(subscription);
		account_id = no_account ? NULL : &subscription_account;
	}
	RecordHistory(w, 0, operation, tenant_id, account_id, subscription_id, details);
}

/*
 * Write the history rows that the last query returned (operation,
 * account_id, subscription_id, details, tenant_id), in its order, by the
 * one writer (RecordHistoryRow: with accounts_by_subscription, a row's
 * account is its subscription's).
 */
void
RecordQueriedHistory(bool accounts_by_subscription)
{
	SPITupleTable *rows = SPI_tuptable;
	uint64		nrows = SPI_processed;
	RowWrites  *w;
	uint64		i;

	if (nrows == 0)
		return;
	w = BeginHistoryWrites(accounts_by_subscription);
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
		RecordHistoryRow(w, accounts_by_subscription, SPI_getvalue(rows->vals[i], rows->tupdesc, 1),
						 no_tenant ? NULL : &tenant_id,
						 no_account ? NULL : &account_id,
						 no_subscription ? NULL : &subscription_id,
						 SPI_getbinval(rows->vals[i], rows->tupdesc, 4, &isnull));
	}
	EndRowWrites(w);
}

/*
 * The tables record_history() records (Z11), and who a row's account and
 * subscription are: the row's own columns (NULL: none); an add-on batch's
 * account is its subscription's (RecordHistoryRow), and its UPDATE's
 * details also name the batch, which the subscription does not (the
 * addon.ended event's batch_id, issue 20).
 */
#define HISTORY_NUM_TABLES 5
static const struct
{
	const char *table;
	const char *account;		/* the column of the row's account */
	const char *subscription;	/* the column of the row's subscription */
	bool		by_subscription;	/* the account is the subscription's */
}			history_tables[HISTORY_NUM_TABLES] =
{
	{"account", "id", NULL, false},
	{"member", "account_id", NULL, false},
	{"subscription", "account_id", "id", false},
	{"addon_batch", NULL, "subscription_id", true},
	{"terms_acceptance", "account_id", NULL, false},
};

/* a column of a row as jsonb (x.r), as a bigint: the query's expression */
static char *
HistoryColumn(const char *column)
{
	return column == NULL ? pstrdup("NULL::bigint") : psprintf("(x.r ->> '%s')::bigint", column);
}

/*
 * The query of a table's history rows for an INSERT or a DELETE, over its
 * transition table, in the order the statement wrote the rows: the row as
 * the application knows it (its tenant key is the history row's own).  A
 * restore ($1) copies a row's history with it (restored_copy); a row
 * without an id of its own (terms_acceptance) is copied whole by the
 * restoring role.  It reads the transition table alone: on Citus it is not
 * joined with a distributed table (issue 17).
 */
static char *
HistoryQuery(int t, GuardedEvent event)
{
	const char *table = history_tables[t].table;

	return psprintf("SELECT '%s_%s', %s, %s, x.r, x.tenant_id"
					"  FROM (SELECT t.tenant_id, to_jsonb(t) - 'tenant_id' AS r FROM %s AS t) AS x"
					" WHERE NOT ($1 AND (NOT x.r ? 'id'"
					"                    OR subscription.restored_copy("
					"                           pg_catalog.format('subscription.%%I', '%s_id_seq')::regclass,"
					"                           (x.r ->> 'id')::bigint)))",
					table, event == GUARDED_INSERT ? "insert" : "delete",
					HistoryColumn(history_tables[t].account), HistoryColumn(history_tables[t].subscription),
					event == GUARDED_INSERT ? "new_rows" : "old_rows", table);
}

/*
 * A column's value as to_jsonb() gives it inside the row's to_jsonb(): a
 * call of to_jsonb() on the column's type (prepared once per statement in
 * to_jsonb), or JSON null for NULL.
 */
static Jsonb *
ColumnJsonb(FmgrInfo *to_jsonb, Datum value, bool isnull)
{
	JsonbValue	null;

	if (!isnull)
		return DatumGetJsonbP(FunctionCall1(to_jsonb, value));
	null.type = jbvNull;
	return JsonbValueToJsonb(&null);
}

/* push a jsonb as the value of the object being built */
static void
PushJsonb(JsonbParseState **state, Jsonb *value)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(value))
	{
		if (!JsonbExtractScalar(&value->root, &v))
			elog(ERROR, "could not read a scalar jsonb");
	}
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* push a key of the object being built (also the events' payloads, events.c) */
void
PushKey(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/*
 * The history rows of an UPDATE of table t, in the order the statement
 * changed the rows: for each row, only its changed columns, as
 * {"column": {"old": .., "new": ..}} (the row's to_jsonb() without its
 * tenant key, compared column by column as jsonb: IS DISTINCT FROM), an add-on
 * batch's with its "batch_id", and no row for an UPDATE that changed
 * nothing.  An UPDATE's old and new rows are paired by their places, the
 * two transition tables read side by side (a join of the two on a
 * row_number(), planned for the first statement's few rows, was a nested
 * loop that read the new rows again for each old one: quadratic, 0.6 s for
 * a set-based renewal of 280 subscriptions, issue 20).  Read here, in C: a
 * column whose stored value did not change is not converted (the query
 * over the transition tables that did this converted both whole rows to
 * jsonb and compared every column: most of record_history's time in a
 * renewal, issue 18).  It reads the transition tables alone: on Citus they
 * are not joined with a distributed table (issue 17).
 */
static void
RecordUpdateHistory(int t, TriggerData *trigdata)
{
	Relation	rel = trigdata->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	Tuplestorestate *olds = trigdata->tg_oldtable;
	Tuplestorestate *news = trigdata->tg_newtable;
	TupleTableSlot *old = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TupleTableSlot *new = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	AttrNumber	tenant_col = attnameAttNum(rel, "tenant_id", false);
	AttrNumber	account_col = InvalidAttrNumber;
	AttrNumber	subscription_col = InvalidAttrNumber;
	AttrNumber	id_col = attnameAttNum(rel, "id", false);
	FmgrInfo   *to_jsonb = palloc0(sizeof(FmgrInfo) * desc->natts);
	char	   *operation = psprintf("%s_update", history_tables[t].table);
	MemoryContext row_context = AllocSetContextCreate(CurrentMemoryContext, "history of an UPDATE",
													  ALLOCSET_DEFAULT_SIZES);
	MemoryContext caller_context;
	RowWrites  *w = NULL;
	int			i;

	if (history_tables[t].account != NULL)
		account_col = attnameAttNum(rel, history_tables[t].account, false);
	if (history_tables[t].subscription != NULL)
		subscription_col = attnameAttNum(rel, history_tables[t].subscription, false);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		fmgr_info(F_TO_JSONB, &to_jsonb[i]);
		to_jsonb[i].fn_expr = (Node *) makeFuncExpr(F_TO_JSONB, JSONBOID,
													list_make1(makeNullConst(att->atttypid, att->atttypmod,
																			 att->attcollation)),
													InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	}
	tuplestore_select_read_pointer(olds, tuplestore_alloc_read_pointer(olds, EXEC_FLAG_REWIND));
	tuplestore_rescan(olds);
	tuplestore_select_read_pointer(news, tuplestore_alloc_read_pointer(news, EXEC_FLAG_REWIND));
	tuplestore_rescan(news);
	while (tuplestore_gettupleslot(olds, true, false, old))
	{
		JsonbParseState *state = NULL;
		JsonbValue *changed = NULL;
		bool		any = false;
		bool		no_tenant = true;
		bool		no_account = true;
		bool		no_subscription = true;
		int64		tenant_id = 0;
		int64		account_id = 0;
		int64		subscription_id = 0;

		if (!tuplestore_gettupleslot(news, true, false, new))
			elog(ERROR, "an UPDATE's transition tables differ in length");
		caller_context = MemoryContextSwitchTo(row_context);
		slot_getallattrs(old);
		slot_getallattrs(new);
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);
			Jsonb	   *o;
			Jsonb	   *n;

			if (att->attisdropped || i + 1 == tenant_col)
				continue;
			if (old->tts_isnull[i] && new->tts_isnull[i])
				continue;
			if (!old->tts_isnull[i] && !new->tts_isnull[i]
				&& datumIsEqual(old->tts_values[i], new->tts_values[i], att->attbyval, att->attlen))
				continue;
			o = ColumnJsonb(&to_jsonb[i], old->tts_values[i], old->tts_isnull[i]);
			n = ColumnJsonb(&to_jsonb[i], new->tts_values[i], new->tts_isnull[i]);
			if (compareJsonbContainers(&o->root, &n->root) == 0)
				continue;
			any = true;
			PushKey(&state, NameStr(att->attname));
			pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
			PushKey(&state, "old");
			PushJsonb(&state, o);
			PushKey(&state, "new");
			PushJsonb(&state, n);
			pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		}
		if (any && history_tables[t].by_subscription)
		{
			PushKey(&state, "batch_id");
			PushJsonb(&state, ColumnJsonb(&to_jsonb[id_col - 1], new->tts_values[id_col - 1],
										  new->tts_isnull[id_col - 1]));
		}
		changed = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		MemoryContextSwitchTo(caller_context);
		if (any)
		{
			Jsonb	   *details;

			if (tenant_col != InvalidAttrNumber)
				tenant_id = DatumGetInt64(slot_getattr(new, tenant_col, &no_tenant));
			if (account_col != InvalidAttrNumber)
				account_id = DatumGetInt64(slot_getattr(new, account_col, &no_account));
			if (subscription_col != InvalidAttrNumber)
				subscription_id = DatumGetInt64(slot_getattr(new, subscription_col, &no_subscription));
			caller_context = MemoryContextSwitchTo(row_context);
			details = JsonbValueToJsonb(changed);
			MemoryContextSwitchTo(caller_context);
			if (w == NULL)
				w = BeginHistoryWrites(history_tables[t].by_subscription);
			RecordHistoryRow(w, history_tables[t].by_subscription, operation,
							 no_tenant ? NULL : &tenant_id,
							 no_account ? NULL : &account_id,
							 no_subscription ? NULL : &subscription_id,
							 JsonbPGetDatum(details));
		}
		MemoryContextReset(row_context);
	}
	if (w != NULL)
		EndRowWrites(w);
	ExecDropSingleTupleTableSlot(old);
	ExecDropSingleTupleTableSlot(new);
	MemoryContextDelete(row_context);
}

/*
 * record_history: AFTER INSERT, UPDATE or DELETE ... FOR EACH STATEMENT
 * trigger of account, member, subscription, addon_batch and
 * terms_acceptance, its argument the logical table (on Citus a shard's own
 * name is not the table's, issue 17): one history row per changed row
 * (R8, Z11), an UPDATE's by RecordUpdateHistory, an INSERT's or a DELETE's
 * from one query over the transition table.  The extension's own
 * bookkeeping: it writes as the extension's owner, the writer needs no
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
	RequireOwnTableTrigger(fcinfo, "record_history");
	if (tuplestore_tuple_count(rows) == 0)
		return PointerGetDatum(NULL);

	if (event == GUARDED_UPDATE)
	{
		BecomeExtensionOwner(&s);
		RecordUpdateHistory(t, trigdata);
		RestoreIdentity(&s);
		return PointerGetDatum(NULL);
	}

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
	RecordQueriedHistory(history_tables[t].by_subscription);
	SPI_finish();
	RestoreIdentity(&s);

	return PointerGetDatum(NULL);
}
