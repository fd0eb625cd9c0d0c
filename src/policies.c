/*-------------------------------------------------------------------------
 *
 * policies.c
 *	  The downgrade policies of a limited table, named in one place.
 *
 * enforce_limit checks a policy's name and limited_table's constraints
 * check the stored one through downgrade_policies() and value_policies(),
 * which read the table below; the limit guards (limits.c) and the trimming
 * (downgrade.c) map a stored name to its DowngradePolicy with
 * DowngradePolicyOf().  A new policy is one row here.
 *
 * RowIdText() says once what the id of a limited table's row is, for the
 * archive of trimmed rows: the limit guard (a cascade's rows) and the
 * trimming (downgrade.c) both write it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "subscription.h"

/* by DowngradePolicy, in the order that messages list them */
static const struct
{
	const char *name;
	bool		needs_value;	/* needs a value column (the values count) */
}			policies[] =
{
	[POLICY_DROP_NEWEST] = {"drop_newest", false},
	[POLICY_KEEP_MOST_REFERENCED] = {"keep_most_referenced", false},
	[POLICY_SCALE] = {"scale", true},
	[POLICY_CAP] = {"cap", true},
	[POLICY_DETACH] = {"detach", true},
	[POLICY_BLOCK] = {"block", false},
};

StaticAssertDecl(lengthof(policies) == POLICY_COUNT, "one name per downgrade policy");

/*
 * The policy a name stores.  limited_table's constraint admits only the
 * names above, so an unknown one is an internal error.
 */
DowngradePolicy
DowngradePolicyOf(const char *name)
{
	for (int i = 0; i < POLICY_COUNT; i++)
		if (strcmp(policies[i].name, name) == 0)
			return (DowngradePolicy) i;
	elog(ERROR, "unknown downgrade policy \"%s\"", name);
	pg_unreachable();
}

static Datum
PolicyNames(bool only_valued)
{
	Datum		names[POLICY_COUNT];
	int			n = 0;

	for (int i = 0; i < POLICY_COUNT; i++)
		if (!only_valued || policies[i].needs_value)
			names[n++] = CStringGetTextDatum(policies[i].name);
	return PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(downgrade_policies);
PG_FUNCTION_INFO_V1(value_policies);

/* downgrade_policies() returns text[]: every policy, in the table's order */
Datum
downgrade_policies(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(PolicyNames(false));
}

/* value_policies() returns text[]: the policies that need a value column */
Datum
value_policies(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(PolicyNames(true));
}

/*
 * The text of a row's id in a query over the table as alias: its primary
 * key's column as text (alias."id"::text), or a row of its columns in key
 * order (ROW(alias."a", alias."b")::text); NULL without a primary key.
 */
char *
RowIdText(Relation rel, const char *alias)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	char	   *result = NULL;

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		Form_pg_index index;

		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "cache lookup failed for index %u", indexoid);
		index = (Form_pg_index) GETSTRUCT(tuple);
		if (index->indisprimary)
		{
			StringInfoData buf;
			int			first = 0;
			int			n;
			int			i;

			/* a key that starts with the tenant key: the row's id within its tenant */
			if (index->indnkeyatts > 1 &&
				strcmp(get_attname(RelationGetRelid(rel), index->indkey.values[0], false), "tenant_id") == 0)
				first = 1;
			n = index->indnkeyatts - first;
			initStringInfo(&buf);
			if (n > 1)
				appendStringInfoString(&buf, "ROW(");
			for (i = 0; i < n; i++)
				appendStringInfo(&buf, "%s%s.%s", i > 0 ? ", " : "", alias,
								 quote_identifier(get_attname(RelationGetRelid(rel),
															  index->indkey.values[first + i], false)));
			appendStringInfoString(&buf, n > 1 ? ")::text" : "::text");
			result = buf.data;
		}
		ReleaseSysCache(tuple);
		if (result != NULL)
			break;
	}
	list_free(indexes);
	return result;
}
