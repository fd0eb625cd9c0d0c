/*-------------------------------------------------------------------------
 *
 * cycles.c
 *	  Identity of billing cycles.
 *
 * interval equality is too loose for billing: '1 month' = '30 days' is true
 * in PostgreSQL, yet a monthly and a 30-day cycle renew on different dates
 * (K2 bills every 30 or 365 days, Z7 monthly or annually).  cycle_key()
 * exposes an interval's three fields so that prices are looked up, and kept
 * unique, by the cycle exactly as written.
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
