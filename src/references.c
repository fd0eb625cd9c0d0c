/*-------------------------------------------------------------------------
 *
 * references.c
 *	  The references of a table to itself, read as a foreign key reads them.
 *
 * account.parent_id and ledger.charge_id are checked by triggers instead of
 * foreign keys to the same table, which pg_dump reports as circular
 * (refuse_delete_in_use(), check_reference(), sql/src/24_keep.sql).  Before
 * such a row is deleted, the rows that name it are counted with the latest
 * snapshot, as ri_triggers.c checks a NO ACTION key: under REPEATABLE READ
 * a sub-account committed after the deleter's snapshot is seen, and the
 * delete refused, instead of leaving it without its parent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(self_referrers);

/*
 * self_referrers(relation text, id bigint, tenant_id bigint) returns bigint:
 * how many rows of subscription.account ('account': its sub-accounts) or
 * subscription.ledger ('ledger': the lines that give back or pay a charge)
 * name the row id, read with the latest snapshot; in the tenant given, or
 * in every tenant when tenant_id is NULL.
 */
Datum
self_referrers(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[2][2];	/* [ledger?][in a tenant?] */
	static const char *const queries[2][2] = {
		{"SELECT count(*) FROM subscription.account WHERE parent_id = $1",
		"SELECT count(*) FROM subscription.account WHERE tenant_id = $2 AND parent_id = $1"},
		{"SELECT count(*) FROM subscription.ledger WHERE charge_id = $1",
		"SELECT count(*) FROM subscription.ledger WHERE tenant_id = $2 AND charge_id = $1"}
	};
	char	   *relation;
	bool		in_tenant = !PG_ARGISNULL(2);
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2];
	int			which;
	bool		isnull;
	int64		n;
	int			save_nestlevel;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	relation = text_to_cstring(PG_GETARG_TEXT_PP(0));
	values[0] = PG_GETARG_DATUM(1);
	values[1] = in_tenant ? PG_GETARG_DATUM(2) : Int64GetDatum(0);
	if (strcmp(relation, "account") == 0)
		which = 0;
	else if (strcmp(relation, "ledger") == 0)
		which = 1;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has no reference to itself", relation),
				 errhint("The tables are account and ledger.")));

	SPI_connect();
	save_nestlevel = PinSearchPath();
	KeptPlan(&plans[which][in_tenant], queries[which][in_tenant], in_tenant ? 2 : 1, argtypes);
	if (SPI_execute_snapshot(plans[which][in_tenant], values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the rows that name a row of subscription.%s", relation);
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	UnpinSearchPath(save_nestlevel);
	SPI_finish();
	PG_RETURN_INT64(n);
}
