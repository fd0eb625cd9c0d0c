/*-------------------------------------------------------------------------
 *
 * tenants.c
 *	  The tenant key of a row: the root account's id, filled in when an
 *	  INSERT leaves it out.
 *
 * Every tenant table carries tenant_id, first in its primary and foreign
 * keys, so that Citus can distribute the tables by it and keep an account,
 * its sub-accounts (K7) and everything they hold in one shard group
 * (docs/design.md#tenant-keys).  The extension's own functions write it;
 * a row written without it on a single server (the application's own
 * INSERT of a member, a restore of a 1.0 dump) takes the tenant of the row
 * it references, as its foreign key reads it.  On Citus the INSERT must
 * name it: the coordinator routes the row by it before any trigger runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(fill_tenant_id);
PG_FUNCTION_INFO_V1(tenant_of);

/*
 * Whether the extension's table has its tenant key: since 1.1.  The
 * library serves a 1.0 schema too, between an upgrade of the packages and
 * ALTER EXTENSION subscription UPDATE; a statement written for 1.0 stays
 * right on 1.1, where fill_tenant_id() fills the key.
 */
bool
TenantKeyed(const char *table)
{
	return get_attnum(OwnTable(table), "tenant_id") != InvalidAttrNumber;
}

/*
 * The tenant of the account or subscription id, read as its owner with the
 * latest snapshot; false when there is no such row.
 */
static bool
ReadTenant(const char *referenced, int64 id, int64 *tenant)
{
	Relation	rel = table_open(OwnTable(referenced), AccessShareLock);
	TupleTableSlot *row = table_slot_create(rel, NULL);
	Datum		key = Int64GetDatum(id);
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	bool		found = FetchRowByKey(rel, latest, 1, &key, row);
	bool		isnull;

	if (found)
		*tenant = DatumGetInt64(slot_getattr(row, RowWriteColumn(rel, "tenant_id"), &isnull));
	UnregisterSnapshot(latest);
	ExecDropSingleTupleTableSlot(row);
	table_close(rel, NoLock);
	return found;
}

/*
 * fill_tenant_id(table, column, referenced): a BEFORE INSERT row trigger,
 * fired only when the row has no tenant_id.  It takes the tenant of the
 * account or subscription (referenced) that column names.  Without one: an
 * account is a tenant of its own (a root account, or a sub-account whose
 * parent check_reference() refuses next), a history row of the catalog is
 * tenant 0's and one of an erased account its own; any other row is
 * refused as its foreign key would refuse it.
 */
Datum
fill_tenant_id(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	row;
	const char *table;
	const char *column;
	const char *referenced;
	AttrNumber	ref_col;
	AttrNumber	tenant_col;
	bool		isnull;
	int64		ref_id = 0;
	int64		tenant = 0;
	bool		found = false;
	Datum		value;
	bool		null = false;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 3)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("fill_tenant_id() must be fired BEFORE INSERT FOR EACH ROW with three arguments")));
	/*
	 * It reads tenants as the extension's owner: only for the extension's
	 * own tables, as the history triggers (a caller's table learns nothing
	 * tenant_of() would not tell it, but has no business here).
	 */
	RequireOwnTableTrigger(fcinfo, "fill_tenant_id");
	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	row = trigdata->tg_trigtuple;
	table = trigdata->tg_trigger->tgargs[0];
	column = trigdata->tg_trigger->tgargs[1];
	referenced = trigdata->tg_trigger->tgargs[2];
	ref_col = SPI_fnumber(tupdesc, column);
	tenant_col = SPI_fnumber(tupdesc, "tenant_id");
	if (ref_col <= 0 || tenant_col <= 0 ||
		(strcmp(referenced, "account") != 0 && strcmp(referenced, "subscription") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("fill_tenant_id() cannot fill the tenant of table \"%s\" from \"%s\"",
						RelationGetRelationName(rel), column)));

	value = heap_getattr(row, ref_col, tupdesc, &isnull);
	if (!isnull)
	{
		IdentitySwitch s;

		ref_id = DatumGetInt64(value);
		BecomeExtensionOwner(&s);
		found = ReadTenant(referenced, ref_id, &tenant);
		RestoreIdentity(&s);
	}
	if (!found)
	{
		if (strcmp(table, "account") == 0)
			tenant = DatumGetInt64(heap_getattr(row, SPI_fnumber(tupdesc, "id"), tupdesc, &null));
		else if (strcmp(table, "history") == 0)
			tenant = isnull ? 0 : ref_id;
		else if (isnull)
			null = true;		/* the column's NOT NULL says it */
		else
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("insert or update on table \"%s\" violates foreign key constraint \"%s_%s_fkey\"",
							table, table, column),
					 errdetail("Key (%s)=(" INT64_FORMAT ") is not present in table \"%s\".",
							   column, ref_id, referenced),
					 errtable(rel)));
	}
	if (!null)
	{
		int			cols[1] = {tenant_col};
		Datum		tenant_value = Int64GetDatum(tenant);
		bool		tenant_null = false;

		row = heap_modify_tuple_by_cols(row, tupdesc, 1, cols, &tenant_value, &tenant_null);
	}
	return PointerGetDatum(row);
}

/*
 * The tenant of an account, a subscription or an add-on batch, by its id
 * alone; false when there is none.  What the unkeyed forms of the
 * functions that write look up before they call their keyed form
 * (docs/design.md#keyed-forms).
 */
bool
TenantOf(const char *kind, int64 id, int64 *tenant)
{
	if (strcmp(kind, "account") != 0 && strcmp(kind, "subscription") != 0 &&
		strcmp(kind, "addon_batch") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kind of tenant row \"%s\"", kind),
				 errhint("The kinds are account, subscription and addon_batch.")));
	return ReadTenant(kind, id, tenant);
}

/*
 * tenant_of(kind text, id bigint) returns bigint: NULL for an unknown id
 */
Datum
tenant_of(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		tenant;

	if (!TenantOf(kind, PG_GETARG_INT64(1), &tenant))
		PG_RETURN_NULL();
	PG_RETURN_INT64(tenant);
}

/*
 * A keyed form's first check (require_tenant, in SQL): the id in argument
 * id_arg is of the tenant in argument 0.  Needs SPI connected.
 */
void
RequireTenant(const char *fn, FunctionCallInfo fcinfo, const char *kind, int id_arg)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[4] = {TEXTOID, INT8OID, TEXTOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(fn);
	values[1] = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	nulls[1] = PG_ARGISNULL(0) ? 'n' : ' ';
	values[2] = CStringGetTextDatum(kind);
	values[3] = PG_ARGISNULL(id_arg) ? (Datum) 0 : PG_GETARG_DATUM(id_arg);
	nulls[3] = PG_ARGISNULL(id_arg) ? 'n' : ' ';
	KeptPlan(&plan, "SELECT subscription.require_tenant($1, $2, $3, $4)", 4, argtypes);
	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the tenant of %s", fn);
}
