/*-------------------------------------------------------------------------
 *
 * proration.c
 *	  The refund of the unused part of a paid period (C1, K3, L9).
 *
 * The refund is amount * unused / total, rounded once, half away from
 * zero.  It is computed as an exact rational number on numeric integers
 * (integer quotient plus remainder), never through an intermediate
 * rounded division, so that refund + used = amount holds exactly and no
 * double rounding can move a result by one minor unit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "common/int.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(prorate_refund);

#define MAX_REFUND_SCALE 6

static Datum
NumericFromInt64(int64 value)
{
	return NumericGetDatum(int64_to_numeric(value));
}

static int
NumericCompare(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

/*
 * round(amount * unused / total, scale), half away from zero, exactly.
 * All numeric: amount >= 0, 0 <= unused <= total, total > 0.
 */
static Datum
ExactProratedAmount(Datum amount, Datum unused, Datum total, int scale)
{
	static const int64 powers_of_ten[MAX_REFUND_SCALE + 1] =
	{1, 10, 100, 1000, 10000, 100000, 1000000};
	Datum		numerator;
	Datum		denominator = total;
	Datum		quotient;
	Datum		remainder;

	/* amount * 10^scale * unused, exact; may still carry a fraction */
	numerator = DirectFunctionCall2(numeric_mul, amount,
									NumericFromInt64(powers_of_ten[scale]));
	numerator = DirectFunctionCall2(numeric_mul, numerator, unused);

	quotient = DirectFunctionCall2(numeric_div_trunc, numerator, denominator);
	remainder = DirectFunctionCall2(numeric_sub, numerator,
									DirectFunctionCall2(numeric_mul, quotient, denominator));

	/* half away from zero (everything is >= 0): up when 2 * remainder >= total */
	if (NumericCompare(DirectFunctionCall2(numeric_add, remainder, remainder),
					   denominator) >= 0)
		quotient = DirectFunctionCall2(numeric_add, quotient, NumericFromInt64(1));

	/* times 10^-scale: exact, and the result's scale is exactly "scale" */
	return DirectFunctionCall2(numeric_mul, quotient,
							   NumericGetDatum(int64_div_fast_to_numeric(1, scale)));
}

/* b - a as numeric: a span of timestamps can exceed int64 microseconds */
static Datum
TimestampSpan(TimestampTz a, TimestampTz b)
{
	int64		span;

	if (!pg_sub_s64_overflow(b, a, &span))
		return NumericFromInt64(span);
	return DirectFunctionCall2(numeric_sub, NumericFromInt64(b), NumericFromInt64(a));
}

static void
RequireFiniteTimestamp(TimestampTz ts, const char *what)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be finite", what)));
}

static DateADT
LocalDate(TimestampTz ts)
{
	return DatumGetDateADT(DirectFunctionCall1(timestamptz_date, TimestampTzGetDatum(ts)));
}

/*
 * prorate_refund(amount numeric, period_start timestamptz,
 *				  period_end timestamptz, at timestamptz,
 *				  unit text, scale int) returns numeric
 */
Datum
prorate_refund(PG_FUNCTION_ARGS)
{
	Numeric		amount = PG_GETARG_NUMERIC(0);
	TimestampTz period_start = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz period_end = PG_GETARG_TIMESTAMPTZ(2);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(3);
	char	   *unit = text_to_cstring(PG_GETARG_TEXT_PP(4));
	int32		scale = PG_GETARG_INT32(5);
	Datum		amount_datum = NumericGetDatum(amount);
	bool		by_day;
	Datum		unused;
	Datum		total;

	if (numeric_is_nan(amount) || numeric_is_inf(amount))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount must be a finite number")));
	if (NumericCompare(amount_datum, NumericFromInt64(0)) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount must not be negative")));

	if (strcmp(unit, "day") == 0)
		by_day = true;
	else if (strcmp(unit, "second") == 0)
		by_day = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown proration unit \"%s\"", unit),
				 errhint("The unit is \"day\" or \"second\".")));

	if (scale < 0 || scale > MAX_REFUND_SCALE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scale must be between 0 and %d", MAX_REFUND_SCALE),
				 errdetail("The scale was %d.", scale)));

	RequireFiniteTimestamp(period_start, "period start");
	RequireFiniteTimestamp(period_end, "period end");
	RequireFiniteTimestamp(at, "change time");

	if (period_end <= period_start)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("period end must be later than period start")));

	if (at <= period_start)
		unused = total = NumericFromInt64(1);
	else if (at >= period_end)
	{
		unused = NumericFromInt64(0);
		total = NumericFromInt64(1);
	}
	else if (by_day)
	{
		DateADT		end_day = LocalDate(period_end);
		int32		total_days = end_day - LocalDate(period_start);

		/* the day of the change is refunded */
		int32		unused_days = Min(Max(end_day - LocalDate(at), 0), total_days);

		/* a period inside one calendar day: that day is the day of the change */
		if (total_days == 0)
			unused_days = total_days = 1;
		unused = NumericFromInt64(unused_days);
		total = NumericFromInt64(total_days);
	}
	else
	{
		total = TimestampSpan(period_start, period_end);
		unused = TimestampSpan(at, period_end);
	}

	PG_RETURN_DATUM(ExactProratedAmount(amount_datum, unused, total, scale));
}
