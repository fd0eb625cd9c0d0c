/*-------------------------------------------------------------------------
 *
 * bounds.c
 *	  Bounds on time, quantities and amounts (issue 15).
 *
 * A typo must not bill decades: a time further back than
 * subscription.max_backdate, a renewal further ahead than
 * subscription.max_ahead, a quantity above subscription.max_quantity and an
 * amount above subscription.max_amount are refused, each with a DETAIL
 * that names its setting.  The settings are defined in subscription.c; the
 * checks are in C so that they read them as typed values, whatever loaded
 * the library first.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "subscription.h"

PG_FUNCTION_INFO_V1(require_quantity);
PG_FUNCTION_INFO_V1(require_amount);
PG_FUNCTION_INFO_V1(require_time);

/* the first time no call accepts: year 10000, far from timestamptz's own end */
#define LAST_TIME_TEXT "10000-01-01 00:00:00+00"

static Datum
SettingInterval(const char *value)
{
	return DirectFunctionCall3(interval_in, CStringGetDatum(value),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

static char *
TimeText(TimestampTz t)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t)));
}

/*
 * require_quantity(quantity integer) returns void: at least 1 (22023), at
 * most subscription.max_quantity (22003)
 */
Datum
require_quantity(PG_FUNCTION_ARGS)
{
	int32		quantity = PG_GETARG_INT32(0);

	if (quantity < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("quantity must be at least 1"),
				 errdetail("The quantity was %d.", quantity)));
	if (quantity > subscription_max_quantity)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("quantity %d is above the largest allowed, %d", quantity, subscription_max_quantity),
				 errdetail("The largest quantity is the setting subscription.max_quantity."),
				 errhint("Raise subscription.max_quantity if this quantity is meant.")));
	PG_RETURN_VOID();
}

/*
 * require_amount(amount numeric, currency text) returns void: the absolute
 * value at most subscription.max_amount major units (22003)
 */
Datum
require_amount(PG_FUNCTION_ARGS)
{
	Datum		amount = PG_GETARG_DATUM(0);
	text	   *currency = PG_GETARG_TEXT_PP(1);
	Datum		largest = DirectFunctionCall1(int4_numeric, Int32GetDatum(subscription_max_amount));
	Datum		size = DirectFunctionCall1(numeric_abs, amount);

	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, size, largest)) > 0)
	{
		char	   *digits = DatumGetCString(DirectFunctionCall1(numeric_out, amount));

		/* a fat finger's 301 digits are not worth repeating: their count is */
		if (strlen(digits) > 40)
			digits = psprintf("(%d digits)", (int) strlen(digits));
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("amount %s %s is above the largest allowed, %d %s",
						digits, text_to_cstring(currency), subscription_max_amount, text_to_cstring(currency)),
				 errdetail("The largest amount is the setting subscription.max_amount, in the currency's major unit."),
				 errhint("Raise subscription.max_amount if this amount is meant.")));
	}
	PG_RETURN_VOID();
}

/*
 * require_time(fn text, at timestamptz, renewal boolean) returns void
 *
 * A time given to fn(): finite (22023), before year 10000 (22008), not
 * further back than subscription.max_backdate (22023), and for a renewal
 * run, not further ahead than subscription.max_ahead (22023).  "Now" is
 * the billing clock, subscription.now() (issue 20).
 */
Datum
require_time(PG_FUNCTION_ARGS)
{
	char	   *fn = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(1);
	bool		renewal = PG_GETARG_BOOL(2);
	TimestampTz now = SubscriptionNow();
	TimestampTz last = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(LAST_TIME_TEXT),
															   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	TimestampTz earliest;

	if (TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the time given to %s() must be finite", fn),
				 errdetail("%s() was given %s.", fn, TimeText(at))));
	if (at >= last)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("the time given to %s() is out of range", fn),
				 errdetail("%s() was given %s; times before the year 10000 are accepted.", fn, TimeText(at))));
	earliest = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(now),
													   SettingInterval(subscription_max_backdate)));
	if (at < earliest)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the time given to %s() is too far back", fn),
				 errdetail("%s() was given %s, before %s: subscription.max_backdate is %s.",
						   fn, TimeText(at), TimeText(earliest), subscription_max_backdate),
				 errhint("Check the year; raise subscription.max_backdate if this time is meant.")));
	if (renewal)
	{
		TimestampTz latest = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(now),
																	 SettingInterval(subscription_max_ahead)));

		if (at > latest)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the time given to %s() is too far ahead", fn),
					 errdetail("%s() was given %s, after %s: subscription.max_ahead is %s.",
							   fn, TimeText(at), TimeText(latest), subscription_max_ahead),
					 errhint("Check the year; raise subscription.max_ahead if this time is meant.")));
	}
	PG_RETURN_VOID();
}
