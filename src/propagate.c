/*-------------------------------------------------------------------------
 *
 * propagate.c
 *	  What a transaction sets on the coordinator, on Citus' workers too
 *	  (issue 17).
 *
 * On Citus the triggers, defaults and keyed calls of a transaction's
 * writes run on the workers' shards, in the workers' own sessions.  Two
 * things a transaction sets would stay on the coordinator:
 *
 * - Its subscription.* settings.  A SET LOCAL subscription.<name> (a
 *   value or DEFAULT) is handed to Citus as a SET LOCAL of its own that
 *   it sends to every node of the transaction, then and later in it, as
 *   citus.propagate_set_commands = 'local' does, for this statement only:
 *   the session's other settings keep Citus' rule.  Citus sends it where
 *   its rule sends a SET LOCAL (a transaction block, or a function's
 *   statement, as apply_downgrade's subscription.trimming in autocommit:
 *   the one place that propagates it, downgrade.c).  The
 *   billing clock, the payment terms, the actor, whatever code on a worker
 *   reads.  A setting set for the session stays the session's, as Citus
 *   leaves such settings (docs/citus.md says what to do instead).
 *
 * - Its SET CONSTRAINTS (I8: SET CONSTRAINTS
 *   subscription.invoice_record_opened IMMEDIATE writes the openings at
 *   the end of each statement), which Citus does not send.  After the
 *   statement has run here, the hook sets subscription.set_constraints
 *   LOCAL to the same clause, its constraints named with their schema,
 *   and that SET LOCAL reaches the nodes as above.  Wherever a SET LOCAL
 *   subscription.set_constraints runs (a worker's connection, or here),
 *   the hook applies the clause there, each named constraint standing for
 *   itself and for its shards' copies (Citus names a shard's constraint
 *   trigger <name>_<shard id>); a name the node does not have is left
 *   out, as an application's local table has no copy on the workers.
 *
 * On a single server (no Citus loaded) nothing is sent and nothing set:
 * SET and SET CONSTRAINTS run as PostgreSQL runs them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_constraint.h"
#include "commands/trigger.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "subscription.h"

#define SET_CONSTRAINTS_SETTING "subscription.set_constraints"

char	   *subscription_set_constraints = NULL;

static ProcessUtility_hook_type prev_process_utility = NULL;

/* a SET LOCAL runs in the DO block RunInBlockForCitus made for it */
static bool in_citus_block = false;

/* Citus' propagation setting, or NULL where Citus is not loaded */
static const char *
CitusPropagation(void)
{
	return GetConfigOption("citus.propagate_set_commands", true, false);
}

/*
 * The namespace of the first schema of the search path that holds a
 * constraint named so, as SET CONSTRAINTS looks an unqualified name up;
 * InvalidOid if none does.
 */
static Oid
ConstraintNamespace(const char *name)
{
	Relation	rel = table_open(ConstraintRelationId, AccessShareLock);
	List	   *path = fetch_search_path(true);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, path)
	{
		Oid			nsp = lfirst_oid(lc);
		ScanKeyData key[2];
		SysScanDesc scan;

		ScanKeyInit(&key[0], Anum_pg_constraint_conname, BTEqualStrategyNumber, F_NAMEEQ,
					CStringGetDatum(name));
		ScanKeyInit(&key[1], Anum_pg_constraint_connamespace, BTEqualStrategyNumber, F_OIDEQ,
					ObjectIdGetDatum(nsp));
		scan = systable_beginscan(rel, ConstraintNameNspIndexId, true, NULL, 2, key);
		if (HeapTupleIsValid(systable_getnext(scan)))
			found = nsp;
		systable_endscan(scan);
		if (OidIsValid(found))
			break;
	}
	list_free(path);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The text of "SET LOCAL <name> TO <value>" (DEFAULT for a NULL value), the
 * one statement handed to Citus for a setting it sends to the nodes: Citus
 * sends the query string it is given, so never the caller's whole string,
 * whose other statements the workers would run too (review h-rev4).
 */
static char *
SetLocalCommand(const char *name, const char *value)
{
	return psprintf("SET LOCAL %s TO %s", name, value == NULL ? "DEFAULT" : quote_literal_cstr(value));
}

/*
 * Run a SET LOCAL (its text) in a DO block of its own.  Citus sends a SET
 * LOCAL to the nodes only in what it takes for a transaction of several
 * statements: a transaction block, a DO block, a procedure, a statement
 * of a function run by a statement of a function.  A function called by
 * a query in autocommit (apply_downgrade, its subscription.trimming) is
 * none of them, yet the statements it runs next reach the workers in one
 * transaction, whose nodes Citus sends the SET LOCALs it has seen.  In a
 * DO block (no SET clause: a SET LOCAL lasts to the transaction's end)
 * Citus sees the SET LOCAL and sends it.
 */
static void
RunInBlockForCitus(const char *command)
{
	DoStmt	   *block = makeNode(DoStmt);
	PlannedStmt *planned = makeNode(PlannedStmt);
	char	   *body = psprintf("BEGIN EXECUTE %s; END", quote_literal_cstr(command));

	block->args = list_make1(makeDefElem("as", (Node *) makeString(body), -1));
	planned->commandType = CMD_UTILITY;
	planned->canSetTag = false;
	planned->utilityStmt = (Node *) block;
	planned->stmt_location = -1;
	planned->stmt_len = 0;
	in_citus_block = true;
	PG_TRY();
	{
		ProcessUtility(planned, body, false, PROCESS_UTILITY_QUERY, NULL, NULL, None_Receiver, NULL);
	}
	PG_FINALLY();
	{
		in_citus_block = false;
	}
	PG_END_TRY();
}

/*
 * SET CONSTRAINTS has run here: set subscription.set_constraints LOCAL to
 * its clause, its names qualified, through the whole utility hook chain,
 * so that Citus sends it to the transaction's nodes.
 */
static void
ForwardConstraints(ConstraintsSetStmt *stmt)
{
	StringInfoData clause;
	char	   *command;
	PlannedStmt *planned;
	VariableSetStmt *set;
	ListCell   *lc;

	initStringInfo(&clause);
	if (stmt->constraints == NIL)
		appendStringInfoString(&clause, "ALL");
	foreach(lc, stmt->constraints)
	{
		RangeVar   *name = lfirst_node(RangeVar, lc);
		const char *schema = name->schemaname;

		if (schema == NULL)
		{
			Oid			nsp = ConstraintNamespace(name->relname);

			if (!OidIsValid(nsp))
				continue;		/* SET CONSTRAINTS refused it already */
			schema = get_namespace_name(nsp);
		}
		appendStringInfo(&clause, "%s%s.%s", clause.len > 0 ? ", " : "",
						 quote_identifier(schema), quote_identifier(name->relname));
	}
	if (clause.len == 0)
		return;
	appendStringInfoString(&clause, stmt->deferred ? " DEFERRED" : " IMMEDIATE");

	command = SetLocalCommand(SET_CONSTRAINTS_SETTING, clause.data);
	set = castNode(VariableSetStmt,
				   linitial_node(RawStmt, raw_parser(command, RAW_PARSE_DEFAULT))->stmt);
	planned = makeNode(PlannedStmt);
	planned->commandType = CMD_UTILITY;
	planned->canSetTag = false;
	planned->utilityStmt = (Node *) set;
	planned->stmt_location = -1;
	planned->stmt_len = 0;
	ProcessUtility(planned, command, false, PROCESS_UTILITY_QUERY, NULL, NULL,
				   None_Receiver, NULL);
}

/*
 * Is this constraint the named one, or a shard's copy of it (the name, an
 * underscore and the shard's id)?
 */
static bool
NamesConstraint(const char *conname, const char *name)
{
	size_t		len = strlen(name);
	const char *p;

	if (strncmp(conname, name, len) != 0)
		return false;
	if (conname[len] == '\0')
		return true;
	if (conname[len] != '_' || conname[len + 1] == '\0')
		return false;
	for (p = conname + len + 1; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

/*
 * A SET LOCAL subscription.set_constraints has run: apply its clause here,
 * each name standing for the deferrable constraints of its schema that
 * bear it or a shard's form of it.
 */
static void
ApplyConstraints(const char *value)
{
	MemoryContext context = CurrentMemoryContext;
	List	   *volatile parsed;
	RawStmt    *raw;
	StringInfoData text;
	ConstraintsSetStmt *stmt;
	ConstraintsSetStmt *local;
	ListCell   *lc;

	if (value == NULL || value[0] == '\0')
		return;
	initStringInfo(&text);
	appendStringInfo(&text, "SET CONSTRAINTS %s", value);
	/* the parser only reads the text: its syntax error is reported as 22023 */
	PG_TRY();
	{
		parsed = raw_parser(text.data, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		FlushErrorState();
		parsed = NIL;
	}
	PG_END_TRY();
	raw = list_length(parsed) == 1 ? linitial_node(RawStmt, parsed) : NULL;
	if (raw == NULL || !IsA(raw->stmt, ConstraintsSetStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for parameter \"%s\": \"%s\"", SET_CONSTRAINTS_SETTING, value),
				 errdetail("The value must be the clause of one SET CONSTRAINTS statement.")));
	stmt = (ConstraintsSetStmt *) raw->stmt;

	local = makeNode(ConstraintsSetStmt);
	local->deferred = stmt->deferred;
	local->constraints = NIL;
	if (stmt->constraints != NIL)
	{
		Relation	rel = table_open(ConstraintRelationId, AccessShareLock);

		foreach(lc, stmt->constraints)
		{
			RangeVar   *name = lfirst_node(RangeVar, lc);
			Oid			nsp;
			ScanKeyData key;
			SysScanDesc scan;
			HeapTuple	tuple;

			if (name->schemaname == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for parameter \"%s\": \"%s\"", SET_CONSTRAINTS_SETTING, value),
						 errdetail("Constraint \"%s\" is not qualified with its schema.", name->relname)));
			nsp = get_namespace_oid(name->schemaname, true);
			if (!OidIsValid(nsp))
				continue;
			ScanKeyInit(&key, Anum_pg_constraint_connamespace, BTEqualStrategyNumber, F_OIDEQ,
						ObjectIdGetDatum(nsp));
			scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
			while (HeapTupleIsValid(tuple = systable_getnext(scan)))
			{
				Form_pg_constraint con = (Form_pg_constraint) GETSTRUCT(tuple);

				if (con->condeferrable && NamesConstraint(NameStr(con->conname), name->relname))
					local->constraints = lappend(local->constraints,
												 makeRangeVar(pstrdup(name->schemaname),
															  pstrdup(NameStr(con->conname)), -1));
			}
			systable_endscan(scan);
		}
		table_close(rel, AccessShareLock);
		if (local->constraints == NIL)
			return;				/* none of them on this node */
	}
	AfterTriggerSetState(local);
}

/*
 * A utility statement.  A SET LOCAL subscription.* (a value or DEFAULT)
 * where Citus is loaded runs as "SET LOCAL <name> TO <value>" with
 * citus.propagate_set_commands = 'local', set back after it, so that
 * Citus' own hook (called from here) sends it to the transaction's nodes;
 * a SET CONSTRAINTS in a transaction block or a function there is
 * forwarded as subscription.set_constraints; a SET LOCAL
 * subscription.set_constraints in a transaction block is applied.
 */
static void
SettingsProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					   ProcessUtilityContext context, ParamListInfo params,
					   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	char	   *propagation = NULL;
	bool		propagate = false;
	bool		apply = false;
	bool		forward = false;
	const char *current;

	if (IsA(parsetree, VariableSetStmt))
	{
		VariableSetStmt *set = (VariableSetStmt *) parsetree;

		if (set->is_local && set->name != NULL && pg_strncasecmp(set->name, "subscription.", 13) == 0 &&
			(set->kind == VAR_SET_VALUE || set->kind == VAR_SET_DEFAULT))
		{
			apply = pg_strcasecmp(set->name, SET_CONSTRAINTS_SETTING) == 0 && set->kind == VAR_SET_VALUE &&
				IsTransactionBlock();
			/*
			 * Not the actor: on a worker it would make the triggers on the
			 * shards check the actor's rights (credit_balance from the
			 * ledger's trigger), reading member, a distributed table, from
			 * a shard, which Citus refuses (docs/citus.md).  Nor a name the
			 * extension does not define (the prefix is reserved): that SET
			 * fails here as on a single server, and its name is never
			 * written into a command for the nodes.
			 *
			 * In a transaction block, and in a function's statement outside
			 * one (an autocommit call of apply_downgrade, whose SET LOCAL
			 * subscription.trimming reaches the workers so: RunInBlockForCitus);
			 * never at the top level outside a block, where SET LOCAL sets
			 * nothing.  With citus.propagate_set_commands already 'local'
			 * (the session's), Citus is handed this SET alone too.
			 */
			propagate = pg_strcasecmp(set->name, "subscription.actor") != 0 &&
				GetConfigOption(set->name, true, false) != NULL &&
				(current = CitusPropagation()) != NULL;
			if (propagate && strcmp(current, "local") != 0)
				propagation = pstrdup(current);
		}
	}
	else if (IsA(parsetree, ConstraintsSetStmt))
		forward = (IsTransactionBlock() || context != PROCESS_UTILITY_TOPLEVEL) && CitusPropagation() != NULL;

	if (propagate)
	{
		VariableSetStmt *set = (VariableSetStmt *) parsetree;
		PlannedStmt *own = makeNode(PlannedStmt);

		/*
		 * Citus sends the query string it is given to the nodes (now, and to
		 * each node the transaction reaches later): this statement alone,
		 * not the rest of a string of several ("BEGIN; SET LOCAL ...; SELECT
		 * subscription.subscribe(...); COMMIT"), which the workers would run
		 * too (review h-rev4).  The value as the setting reads it; the
		 * statement's location in its string covers the new string whole.
		 */
		memcpy(own, pstmt, sizeof(PlannedStmt));
		own->stmt_location = 0;
		own->stmt_len = 0;
		pstmt = own;
		queryString = SetLocalCommand(set->name,
									  set->kind == VAR_SET_DEFAULT ? NULL : ExtractSetVariableArgs(set));
		if (!IsTransactionBlock() && context != PROCESS_UTILITY_TOPLEVEL && !in_citus_block)
		{
			/* a function's statement in autocommit: this SET runs in a DO block */
			RunInBlockForCitus(queryString);
			return;
		}
		if (propagation != NULL)
			(void) set_config_option("citus.propagate_set_commands", "local", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
	}
	if (prev_process_utility != NULL)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (propagation != NULL)
		(void) set_config_option("citus.propagate_set_commands", propagation, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	if (apply)
		ApplyConstraints(subscription_set_constraints);
	if (forward)
		ForwardConstraints((ConstraintsSetStmt *) parsetree);
}

/* from _PG_init: what a transaction sets reaches Citus' workers */
void
InstallSettingPropagation(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = SettingsProcessUtility;
}
