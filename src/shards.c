/*-------------------------------------------------------------------------
 *
 * shards.c
 *	  Citus shards mapped to their logical (distributed) tables, without a
 *	  dependency on Citus.
 *
 * On Citus a trigger of a distributed table fires on a shard: a table of
 * its own, with another OID and the table's name plus a shard id
 * (rooms_102029), on a worker.  The guards identify their table by the
 * logical table, so they map a shard to it here.  Citus's catalog
 * (pg_catalog.pg_dist_shard) is read only where it exists: on a single
 * server every relation is its own logical table and nothing is read.
 *
 * A relation is a shard when its name ends in _<shard id>, that shard
 * exists in pg_dist_shard, and Citus names that shard as this relation
 * (shard_name(), which also shortens long names): a table that only looks
 * like a shard is itself.  The answer is cached per relation OID for the
 * life of the backend; a relcache invalidation of the relation only marks
 * its entry, which is looked up again on next use (as ri_triggers.c does).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"

#include "subscription.h"

typedef struct ShardEntry
{
	Oid			relid;			/* the key: a relation, maybe a shard */
	Oid			logical;		/* its logical table (relid when no shard) */
	bool		valid;
} ShardEntry;

static HTAB *shard_cache = NULL;

/*
 * The relation Citus names the shard s.shardid of its table: shard_name()
 * leaves the public schema out, so the schema is put back.
 */
#define SHARD_RELATION_SQL \
	"pg_catalog.to_regclass(CASE WHEN pg_catalog.starts_with(x.sn, x.ns OPERATOR(pg_catalog.||) '.') THEN x.sn" \
	"                            ELSE x.ns OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) x.sn END)"
#define SHARD_NAME_LATERAL(shard) \
	"  JOIN pg_catalog.pg_class AS l ON l.oid = " shard ".logicalrelid" \
	"  JOIN pg_catalog.pg_namespace AS n ON n.oid = l.relnamespace," \
	"  LATERAL (SELECT pg_catalog.shard_name(" shard ".logicalrelid, " shard ".shardid) AS sn," \
	"                  pg_catalog.quote_ident(n.nspname) AS ns) AS x"

static void
ShardCacheCallback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	ShardEntry *entry;

	hash_seq_init(&status, shard_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
}

/* Whether Citus's shard catalog exists in this database. */
bool
CitusPresent(void)
{
	return OidIsValid(get_relname_relid("pg_dist_shard", PG_CATALOG_NAMESPACE));
}

/* The shard id a relation's name ends with (_<digits>), or 0. */
static int64
ShardIdOfName(const char *relname)
{
	const char *suffix = strrchr(relname, '_');
	const char *p;

	if (suffix == NULL || suffix[1] == '\0')
		return 0;
	for (p = suffix + 1; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return 0;
	if (strlen(suffix + 1) > 18)
		return 0;
	return strtoi64(suffix + 1, NULL, 10);
}

/* The distributed table whose shard relid is, read from Citus's catalog. */
static Oid
LookUpLogicalRelation(Oid relid, int64 shardid)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {INT8OID, OIDOID};
	Datum		values[2] = {Int64GetDatum(shardid), ObjectIdGetDatum(relid)};
	Oid			logical = relid;
	int			nest_level;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest_level = PinSearchPath();
	KeptPlan(&plan,
			 "SELECT s.logicalrelid FROM pg_catalog.pg_dist_shard AS s"
			 SHARD_NAME_LATERAL("s")
			 " WHERE s.shardid OPERATOR(pg_catalog.=) $1"
			 "   AND " SHARD_RELATION_SQL " OPERATOR(pg_catalog.=) $2::pg_catalog.regclass",
			 2, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shards of Citus");
	if (SPI_processed == 1)
	{
		bool		isnull;

		logical = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	UnpinSearchPath(nest_level);
	SPI_finish();
	return logical;
}

/*
 * The logical table of a relation: the distributed or reference table
 * whose shard it is, on Citus, else the relation itself.
 */
Oid
LogicalRelation(Oid relid)
{
	ShardEntry *entry;
	bool		found;
	char	   *relname;
	int64		shardid;

	if (!CitusPresent())
		return relid;
	if (shard_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(ShardEntry);
		shard_cache = hash_create("subscription shards", 16, &ctl, HASH_ELEM | HASH_BLOBS);
		RegisterRelcacheCallback(RELCACHE_SHARDS, ShardCacheCallback);
	}
	entry = hash_search(shard_cache, &relid, HASH_ENTER, &found);
	if (found && entry->valid)
		return entry->logical;

	/* not valid until it is built: an error leaves it to be built again */
	entry->valid = false;
	relname = get_rel_name(relid);
	shardid = relname != NULL ? ShardIdOfName(relname) : 0;
	entry->logical = shardid > 0 ? LookUpLogicalRelation(relid, shardid) : relid;
	entry->valid = true;
	return entry->logical;
}

/*
 * One value of a by-value type read from this node's copy of Citus's
 * catalog by a kept plan of two arguments; *isnull when no row or NULL.
 */
static Datum
ReadShardCatalog(SPIPlanPtr *plan, const char *sql, Oid *argtypes, Datum *values, bool *isnull)
{
	Datum		d = (Datum) 0;
	int			nest_level;

	*isnull = true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest_level = PinSearchPath();
	KeptPlan(plan, sql, 2, argtypes);
	if (SPI_execute_plan(*plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shards of Citus");
	if (SPI_processed == 1)
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	UnpinSearchPath(nest_level);
	SPI_finish();
	return d;
}

/*
 * The shard of distributed table other that is colocated with shard
 * relid (the same hash range of the same colocation group), when both
 * are distributed, colocated and the shard is on this node; else
 * InvalidOid.  Inside a shard's trigger Citus runs only statements that
 * execute on this node: a statement on every account of a shard names the
 * colocated shard itself.
 */
Oid
ColocatedShard(Oid relid, Oid other)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {INT8OID, OIDOID};
	Datum		values[2];
	Oid			logical = LogicalRelation(relid);
	bool		isnull;
	Datum		shard;

	if (logical == relid)
		return InvalidOid;
	values[0] = Int64GetDatum(ShardIdOfName(get_rel_name(relid)));
	values[1] = ObjectIdGetDatum(other);
	shard = ReadShardCatalog(&plan,
							 "SELECT " SHARD_RELATION_SQL
							 "  FROM pg_catalog.pg_dist_shard AS t"
							 "  JOIN pg_catalog.pg_dist_partition AS p ON p.logicalrelid OPERATOR(pg_catalog.=) t.logicalrelid"
							 "  JOIN pg_catalog.pg_dist_partition AS q ON q.colocationid OPERATOR(pg_catalog.=) p.colocationid"
							 "                                       AND q.logicalrelid OPERATOR(pg_catalog.=) $2::pg_catalog.regclass"
							 "  JOIN pg_catalog.pg_dist_shard AS s ON s.logicalrelid OPERATOR(pg_catalog.=) q.logicalrelid"
							 "                                  AND s.shardminvalue OPERATOR(pg_catalog.=) t.shardminvalue"
							 SHARD_NAME_LATERAL("s")
							 " WHERE t.shardid OPERATOR(pg_catalog.=) $1 AND p.partmethod OPERATOR(pg_catalog.=) 'h'",
							 argtypes, values, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(shard);
}

/*
 * Whether the shard relid would hold a row keyed by key (a bigint of its
 * table's distribution column): whether the key's hash, by Citus's own
 * worker_hash(), is in the shard's range.  Read from this node's copy of
 * Citus's catalog, so it runs inside a shard's trigger.
 */
bool
ShardHoldsKey(Oid relid, int64 key)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2];
	bool		isnull;
	Datum		holds;

	values[0] = Int64GetDatum(ShardIdOfName(get_rel_name(relid)));
	values[1] = Int64GetDatum(key);
	holds = ReadShardCatalog(&plan,
							 "SELECT pg_catalog.worker_hash($2) OPERATOR(pg_catalog.>=) s.shardminvalue::pg_catalog.int4"
							 "   AND pg_catalog.worker_hash($2) OPERATOR(pg_catalog.<=) s.shardmaxvalue::pg_catalog.int4"
							 "  FROM pg_catalog.pg_dist_shard AS s WHERE s.shardid OPERATOR(pg_catalog.=) $1",
							 argtypes, values, &isnull);
	return isnull || DatumGetBool(holds);
}

/*
 * Whether a relation is a Citus distributed or reference table (the shell
 * table on a node, whose rows live in its shards).
 */
bool
CitusTable(Oid relid)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		citus_table;
	int			nest_level;

	if (!OidIsValid(get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest_level = PinSearchPath();
	KeptPlan(&plan,
			 "SELECT FROM pg_catalog.pg_dist_partition AS p"
			 " WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
			 1, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tables of Citus");
	citus_table = SPI_processed == 1;
	UnpinSearchPath(nest_level);
	SPI_finish();
	return citus_table;
}

/*
 * On a Citus node, the shard of relid colocated with account_shard, a
 * shard of subscription.account on this node: where shard_usage and
 * shard_trim read and write, given the account's shard by the
 * coordinator's query that calls them there.  Runs inside SPI.
 */
Oid
NodeShardOf(Oid account_shard, Oid relid)
{
	Oid			shard = InvalidOid;

	if (LogicalRelation(account_shard) == OwnTable("account") && account_shard != OwnTable("account"))
		shard = ColocatedShard(account_shard, relid);
	if (!OidIsValid(shard))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("relation \"%s\" is not a shard of subscription.account on this node colocated with table \"%s\"",
						get_rel_name(account_shard), get_rel_name(relid))));
	return shard;
}

/* The rows of SPI_tuptable into a materialized set-returning result. */
void
SPIRowsToResult(ReturnSetInfo *rsinfo)
{
	int			natts = rsinfo->setDesc->natts;
	Datum	   *row = palloc(sizeof(Datum) * natts);
	bool	   *nulls = palloc(sizeof(bool) * natts);
	uint64		i;
	int			c;

	for (i = 0; i < SPI_processed; i++)
	{
		for (c = 0; c < natts; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
}
