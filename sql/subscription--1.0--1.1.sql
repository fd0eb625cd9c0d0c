/* subscription--1.0--1.1.sql: from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION subscription UPDATE TO '1.1'" to load this file. \quit

-- Every change here is also in subscription--1.1.sql; test/upgrade.sh
-- proves that 1.0 plus this script equals a fresh 1.1, object for object.
