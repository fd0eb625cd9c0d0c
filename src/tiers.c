/*-------------------------------------------------------------------------
 *
 * tiers.c
 *	  Host-count tiers (L3, L12): the smallest tier that holds a count.
 *
 * A tiered plan is sold only in its tiers: more hosts means the next tier,
 * never a single extra host (L12).  Above the largest tier there is no
 * price list any more, which is why that case has its own SQLSTATE and a
 * hint to contact sales.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(tier_for_hosts);
PG_FUNCTION_INFO_V1(tier_for_hosts_plan);

/* plan used by tier_for_hosts_plan; kept for the life of the backend */
static SPIPlanPtr plan_tiers_plan = NULL;

/*
 * Return the smallest element of "tiers" that is >= hosts, after checking
 * that "tiers" is a usable tier list.  "source" names the list in messages:
 * "tier list" or "tier list of plan "x"".
 */
static int32
SmallestTierHolding(int32 hosts, ArrayType *tiers, const char *source)
{
	int32	   *values;
	int			ntiers;
	int			i;

	if (hosts < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("host count must not be negative"),
				 errdetail("The host count was %d.", hosts)));

	if (ARR_NDIM(tiers) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is empty", source)));
	if (ARR_NDIM(tiers) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be one-dimensional", source)));
	if (ARR_HASNULL(tiers) && array_contains_nulls(tiers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain nulls", source)));
	Assert(ARR_ELEMTYPE(tiers) == INT4OID);

	ntiers = ArrayGetNItems(ARR_NDIM(tiers), ARR_DIMS(tiers));
	values = (int32 *) ARR_DATA_PTR(tiers);

	for (i = 0; i < ntiers; i++)
	{
		if (values[i] <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must contain only positive host counts", source),
					 errdetail("Element %d is %d.", i + 1, values[i])));
		if (i > 0 && values[i] <= values[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be strictly ascending", source),
					 errdetail("Element %d (%d) does not exceed element %d (%d).",
							   i + 1, values[i], i, values[i - 1])));
	}

	/* validation reads the whole list anyway, so a linear search costs nothing more */
	for (i = 0; i < ntiers; i++)
	{
		if (values[i] >= hosts)
			return values[i];
	}

	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("no tier holds %d hosts", hosts),
			 errdetail("The largest tier of the %s holds %d hosts.", source, values[ntiers - 1]),
			 errhint("Contact sales for a plan above %d hosts.", values[ntiers - 1])));
	pg_unreachable();
}

/*
 * tier_for_hosts(hosts int, tiers int[]) returns int
 */
Datum
tier_for_hosts(PG_FUNCTION_ARGS)
{
	int32		hosts = PG_GETARG_INT32(0);
	ArrayType  *tiers = PG_GETARG_ARRAYTYPE_P(1);

	PG_RETURN_INT32(SmallestTierHolding(hosts, tiers, "tier list"));
}

/*
 * tier_for_hosts(plan text, hosts int) returns int
 *
 * The plan's tiers come from subscription.plan_tiers(), the one place that
 * knows how tiers are stored; it also reports an unknown plan.
 */
Datum
tier_for_hosts_plan(PG_FUNCTION_ARGS)
{
	text	   *plan = PG_GETARG_TEXT_PP(0);
	int32		hosts = PG_GETARG_INT32(1);
	Datum		values[1];
	bool		isnull;
	Datum		tiers_datum;
	ArrayType  *tiers;
	char	   *source;
	int32		result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (plan_tiers_plan == NULL)
	{
		Oid			argtypes[1] = {TEXTOID};
		SPIPlanPtr	p;

		p = SPI_prepare("SELECT subscription.plan_tiers($1)", 1, argtypes);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan_tiers_plan = p;
	}

	values[0] = PointerGetDatum(plan);
	if (SPI_execute_plan(plan_tiers_plan, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the tiers of a plan");

	tiers_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	tiers = isnull ? NULL : DatumGetArrayTypeP(tiers_datum);

	if (tiers == NULL || ARR_NDIM(tiers) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plan \"%s\" is not tiered", text_to_cstring(plan)),
				 errdetail("None of its prices names a tier."),
				 errhint("Tiers are the distinct tier values of subscription.plan_price.")));

	source = psprintf("tier list of plan \"%s\"", text_to_cstring(plan));
	result = SmallestTierHolding(hosts, tiers, source);

	SPI_finish();

	PG_RETURN_INT32(result);
}
