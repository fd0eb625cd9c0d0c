/*-------------------------------------------------------------------------
 *
 * cycles.c
 *	  Identity of billing cycles.
 *
 * interval equality is too loose for billing: '1 month' = '30 days' is true
 * in PostgreSQL, yet a monthly and a 30-day cycle renew on different dates
 * (K2 bills every 30 or 365 days, Z7 monthly or annually).  cycle_key()
 * exposes an interval's three fields so that prices are looked up, and kept
 * unique, by the cycle exactly as written; is_valid_cycle() says whether an
 * interval is a billing cycle at all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(cycle_key);
PG_FUNCTION_INFO_V1(is_valid_cycle);

/*
 * cycle_key(cycle interval) returns bigint[]: {months, days, microseconds}
 */
Datum
cycle_key(PG_FUNCTION_ARGS)
{
	Interval   *cycle = PG_GETARG_INTERVAL_P(0);
	Datum		fields[3];

	fields[0] = Int64GetDatum((int64) cycle->month);
	fields[1] = Int64GetDatum((int64) cycle->day);
	fields[2] = Int64GetDatum(cycle->time);

	PG_RETURN_ARRAYTYPE_P(construct_array(fields, 3, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * is_valid_cycle(cycle interval) returns boolean: whether every field of the
 * cycle is zero or more and one is more than zero (a positive billing
 * cycle).  In C: the tables' CHECK constraints and nth_period() ask it for
 * every row a renewal writes (issue 18).
 */
Datum
is_valid_cycle(PG_FUNCTION_ARGS)
{
	Interval   *cycle = PG_GETARG_INTERVAL_P(0);

	PG_RETURN_BOOL(cycle->month >= 0 && cycle->day >= 0 && cycle->time >= 0 &&
				   (cycle->month != 0 || cycle->day != 0 || cycle->time != 0));
}
