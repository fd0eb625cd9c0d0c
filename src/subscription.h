/*-------------------------------------------------------------------------
 *
 * subscription.h
 *	  Declarations shared by the subscription extension's C files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SUBSCRIPTION_H
#define SUBSCRIPTION_H

/*
 * What differs between the server versions that the extension builds
 * against (15 to 18); rowwrite.c has the executor's differences.
 */
#include "storage/proc.h"

/* 18 spells "does not return" before the declaration, as C11 does */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/* the backend's local transaction id: PGPROC keeps it in vxid from 17 on */
#if PG_VERSION_NUM >= 170000
#define MyLocalTransactionId() (MyProc->vxid.lxid)
#else
#define MyLocalTransactionId() (MyProc->lxid)
#endif

/* settings, defined in subscription.c */
extern char *subscription_actor;
extern int	subscription_notice_days;
extern char *subscription_max_backdate;
extern char *subscription_max_ahead;
extern int	subscription_max_catchup;
extern int	subscription_max_quantity;
extern int	subscription_max_amount;

/* subscription.notify_events (events.c): when a writer of events notifies */
typedef enum NotifyEvents
{
	NOTIFY_EVENTS_OFF,
	NOTIFY_EVENTS_ON,			/* when a listener awaits (the doorbell) */
	NOTIFY_EVENTS_ALWAYS
} NotifyEvents;
extern int	subscription_notify_events;
extern bool subscription_allow_clock;
extern char *subscription_clock;
extern char *subscription_trimming;

/* propagate.c: what a transaction sets reaches Citus' workers (issue 17) */
extern char *subscription_set_constraints;
extern void InstallSettingPropagation(void);

/* clock.c: the billing clock, subscription.now() (issue 20) */
#include "datatype/timestamp.h"
extern TimestampTz SubscriptionNow(void);
extern TimestampTz SubscriptionMeterNow(void);

/* history.c: a key of a jsonb object being built */
#include "utils/jsonb.h"
extern void PushKey(JsonbParseState **state, const char *key);

/* subscription.c: the actor written to history */
extern text *CurrentActor(void);

/* identity.c: who runs what */
#include "utils/relcache.h"

/* a relation's primary key index; PostgreSQL 18 added a deferrable_ok flag */
static inline Oid
PrimaryKeyIndexOf(Relation rel)
{
#if PG_VERSION_NUM >= 180000
	return RelationGetPrimaryKeyIndex(rel, false);
#else
	return RelationGetPrimaryKeyIndex(rel);
#endif
}

typedef struct IdentitySwitch
{
	Oid			save_userid;
	int			save_sec_context;
	int			nest_level;
} IdentitySwitch;

extern Oid	ExtensionOwner(void);
extern void BecomeTableOwner(Relation rel, IdentitySwitch *s);
extern void BecomeExtensionOwner(IdentitySwitch *s);
extern void RestoreIdentity(IdentitySwitch *s);
extern bool CallerIsTrusted(void);
extern bool RestoringRole(void);
extern bool ActorNamed(void);
extern bool TrustedWithoutActor(void);
extern void RequireTrustedCaller(void);

/* guard.c: what the statement-level guards share */
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "utils/tuplestore.h"

typedef enum GuardedEvent
{
	GUARDED_INSERT,
	GUARDED_UPDATE,
	GUARDED_DELETE,
	GUARDED_TRUNCATE,
	GUARDED_NOTHING				/* a guard that has nothing to check */
} GuardedEvent;

/* INSERT, UPDATE, DELETE: the GuardedEvent values that carry rows */
#define GUARD_NUM_ROW_EVENTS 3

extern SPIPlanPtr KeptPlan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr KeptPlanWithOptions(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes,
									  int cursor_options);

/*
 * limits.c: the catalog's limit version (issue 17).  In statements on
 * subscription.usage_counter AS u, COUNTER_LIMIT is the limit the guards
 * check (the stored one, or limit_of() when the catalog's limit version
 * moved: subscription.counter_limit, inlined), with the catalog's version
 * as c (CATALOG_LIMIT_VERSION in FROM).  LimitsVersioned() is false in a
 * database still at the SQL of version 1.0, whose stored limits are the
 * limits (u.limit_value).
 */
#define CATALOG_LIMIT_VERSION "subscription.limit_catalog_version() AS c (version)"
#define COUNTER_LIMIT \
	"subscription.counter_limit(u.account_id, u.feature, u.limit_value, u.limit_version, c.version)"
extern bool LimitsVersioned(void);
extern bool CountersOnCitus(void);
extern Snapshot GuardCrosscheckSnapshot(void);
extern int	PinSearchPath(void);
extern void UnpinSearchPath(int nest_level);
extern void RequireOwnTableTrigger(FunctionCallInfo fcinfo, const char *guard);
extern GuardedEvent ClassifyGuardedStatement(FunctionCallInfo fcinfo, const char *guard,
											 Tuplestorestate **rows);
extern TupleTableSlot *OnlyTransitionRow(Tuplestorestate *rows, TupleDesc tupdesc);
/*
 * The extension's relcache callbacks, a slot each (guard.c): a cache that
 * needs one adds its slot here, so that their number is fixed when
 * compiling and no registration can run out of room in a backend.
 */
typedef enum RelcacheSlot
{
	RELCACHE_TABLE_EXPRS,		/* rowwrite.c */
	RELCACHE_ROUTED_TABLES,		/* routed.c */
	RELCACHE_EXTENSION_OWNER,	/* identity.c */
	RELCACHE_RESTORING_ROLE,	/* identity.c */
	RELCACHE_SHARDS,			/* shards.c */
	RELCACHE_LIMITS,			/* limits.c */
	RELCACHE_LIMIT_CATALOG,		/* limits.c */
	RELCACHE_RECORDED_FEATURES, /* usage.c */
	RELCACHE_SLOTS
} RelcacheSlot;
extern void InstallRelcacheCallbacks(void);
extern void RegisterRelcacheCallback(RelcacheSlot slot, void (*func) (Datum arg, Oid relid));

/* shards.c: Citus shards mapped to their logical tables */
extern bool CitusPresent(void);
extern Oid	LogicalRelation(Oid relid);
extern Oid	ColocatedShard(Oid relid, Oid other);
extern bool ShardHoldsKey(Oid relid, int64 key);
extern bool CitusTable(Oid relid);
extern Oid	NodeShardOf(Oid account_shard, Oid relid);
extern void SPIRowsToResult(ReturnSetInfo *rsinfo);

/*
 * rowwrite.c: single rows of the extension's own tables, read and written
 * without a query
 */
#include "access/genam.h"
#include "commands/trigger.h"
#include "nodes/execnodes.h"
#include "nodes/pg_list.h"
#include "utils/snapshot.h"

/* routed.c: a Citus table's statements, in place of direct reads and writes */
typedef struct RoutedTable RoutedTable;

typedef struct RowWrites
{
	EState	   *estate;
	EPQState	epqstate;
	int			ntables;
	ResultRelInfo *tables;		/* by the caller's table number */
	RoutedTable **routed;		/* by table: NULL where written directly */
	/* by table: its AFTER INSERT statement triggers' transition rows */
	TransitionCaptureState **captures;
	bool	   *inserted;		/* by table: a row was inserted directly */
	/* by table, built on its first row: its column defaults, compiled */
	ExprState ***defaults;
	TupleTableSlot **spare;		/* by table: RowWriteSpareSlot's one slot */
} RowWrites;

typedef struct KeyScan
{
	Relation	index;
	IndexScanDesc scan;
	int			nkeys;
	ScanKeyData *keys;
	/* on a routed table (index and scan NULL): the rows read, and the next */
	Relation	rel;
	RoutedTable *routed;
	Snapshot	snapshot;
	List	   *rows;
	int			next;
	bool		by_tenant;		/* routed lookups name the tenant */
	int64		tenant;
} KeyScan;

extern Oid	OwnTable(const char *name);

/* tenants.c: the tenant key */
extern bool TenantKeyed(const char *table);
extern bool TenantOf(const char *kind, int64 id, int64 *tenant);
extern void RequireTenant(const char *fn, FunctionCallInfo fcinfo, const char *kind, int id_arg);
extern RowWrites *BeginRowWrites(int ntables, const Oid *relids);
extern void EndRowWrites(RowWrites *w);
extern Snapshot RowWriteSnapshot(RowWrites *w);
extern Relation RowWriteRelation(RowWrites *w, int table);
extern TupleTableSlot *RowWriteStoredSlot(RowWrites *w, int table);
extern TupleTableSlot *RowWriteNewSlot(RowWrites *w, int table);
extern TupleTableSlot *RowWriteSpareSlot(RowWrites *w, int table);
extern AttrNumber RowWriteColumn(Relation rel, const char *column);
extern void SetRowColumn(TupleTableSlot *slot, bool *given, Relation rel, const char *column,
						 Datum value);
extern KeyScan *BeginKeyScan(Relation rel, Snapshot snapshot, int nkeys, const Datum *keys);
extern KeyScan *BeginTenantKeyScan(Relation rel, Snapshot snapshot, const int64 *tenant, int nkeys,
								   const Datum *keys);
extern bool KeyScanNext(KeyScan *ks, TupleTableSlot *slot);
extern void RescanKeyScan(KeyScan *ks, const Datum *keys);
extern void EndKeyScan(KeyScan *ks);
extern bool FetchRowByKey(Relation rel, Snapshot snapshot, int nkeys, const Datum *keys,
						  TupleTableSlot *slot);
extern bool FetchRowByTenantKey(Relation rel, Snapshot snapshot, const int64 *tenant, int nkeys,
								const Datum *keys, TupleTableSlot *slot);
extern bool LockLatestRow(RowWrites *w, int table, TupleTableSlot *slot, LockTupleMode mode);
extern bool LockLatestVersion(Relation rel, Snapshot snapshot, CommandId cid, TupleTableSlot *slot,
							  LockTupleMode mode);
extern void InsertRow(RowWrites *w, int table, TupleTableSlot *slot, const bool *given);
extern bool InsertRowUnlessConflict(RowWrites *w, int table, TupleTableSlot *slot,
									const bool *given, List *arbiters);
extern void UpdateRow(RowWrites *w, int table, TupleTableSlot *oldslot, TupleTableSlot *newslot);
extern void DeleteRow(RowWrites *w, int table, TupleTableSlot *slot);

extern RoutedTable *RoutedTableOf(Relation rel);
extern bool RoutedInsert(Relation rel, RoutedTable *t, TupleTableSlot *slot, bool unless_conflict,
						 Oid arbiter);
extern void RoutedUpdate(Relation rel, RoutedTable *t, TupleTableSlot *oldslot, TupleTableSlot *newslot);
extern void RoutedDelete(Relation rel, RoutedTable *t, TupleTableSlot *slot);
extern List *RoutedSelect(Relation rel, RoutedTable *t, Snapshot snapshot, const int64 *tenant, int nkeys,
						  const Datum *keys);
extern bool RoutedLock(Relation rel, RoutedTable *t, TupleTableSlot *slot, LockTupleMode mode);

/* history.c: the one writer of a history row (R8) */
extern void RecordHistory(RowWrites *w, int table, const char *operation, const int64 *tenant_id,
						  const int64 *account_id, const int64 *subscription_id, Datum details);
extern void RecordQueriedHistory(bool accounts_by_subscription);

/*
 * downgrade.c: the trimming in progress (0 / InvalidOid when none), so that
 * the limit guards archive the rows the application's own foreign keys
 * delete along with the trimmed ones
 */
typedef struct CascadedRows
{
	Oid			relid;
	char	   *feature;
	Datum		row_ids;		/* text[] */
	Datum		old_rows;		/* jsonb[] */
} CascadedRows;

extern List *TrimmingCascades;	/* of CascadedRows, archived after the trim */
extern int64 TrimmingAccount;
/* policies.c: the downgrade policies of a limited table, and its rows' id text */
typedef enum DowngradePolicy
{
	POLICY_DROP_NEWEST,
	POLICY_KEEP_MOST_REFERENCED,
	POLICY_SCALE,				/* the values are summed */
	POLICY_CAP,					/* the values are capped, no counter */
	POLICY_DETACH,				/* non-NULL values count */
	POLICY_BLOCK,
	POLICY_COUNT
} DowngradePolicy;

extern DowngradePolicy DowngradePolicyOf(const char *name);
extern char *RowIdText(Relation rel, const char *alias);

/* limits.c */
extern int64 RecountUsage(Oid relid, const char *feature, bool one_account, int64 account,
						  Tuplestorestate *drift, TupleDesc drift_desc);
extern int64 TrimmingSubscription;
extern Oid	TrimmingRelation;
extern bool TrimmingElsewhere(int64 *tenant, int64 *account, int64 *subscription_id, Oid relid);
extern void ArchiveCascaded(int64 tenant, int64 account, int64 subscription_id, CascadedRows *c);

/* licenses.c: Q1, whether the call is made under subscription.idempotency_key */
extern bool IdempotencyRequested(void);

/* limits.c: a feature's counter locked and moved by usage without rows (issue 21) */
extern void LockUsageCounter(int64 tenant, int64 account, const char *feature);
extern int64 MoveUsageWithoutRows(int64 tenant, int64 account, const char *feature, int64 delta,
								  const TimestampTz *at);

#endif							/* SUBSCRIPTION_H */
