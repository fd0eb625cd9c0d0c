/*-------------------------------------------------------------------------
 *
 * history.c
 *	  The one writer of a history row (R8).
 *
 * Every row of subscription.history that the extension writes is written
 * by RecordHistory(): the row trigger record_history() and erase_account()
 * through subscription.write_history(), the license guard's statement,
 * one-row and TRUNCATE paths directly.  The writer gives the operation,
 * the account, the subscription and the details; RecordHistory() adds the
 * actor (CurrentActor(): subscription.actor, else the session user), and
 * the table's defaults fill the rest as for an INSERT: the id, the time,
 * and the database roles db_user (calling_role()) and db_session_user.
 * So every path records the same columns the same way.
 *
 * One row at a time, by rowwrite.c, as the extension's owner: a set-based
 * writer (a statement-level trigger over its transition table) calls it
 * once per row, as the license guard does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(write_history);

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
	if (GetUserId() != ExtensionOwner())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only the extension's own functions write history"),
				 errhint("History is written by the functions that make the changes.")));
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
