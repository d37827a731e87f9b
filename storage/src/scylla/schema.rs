//! `storage/schema.cql`: splitting it into statements, rendering the
//! keyspace statement from the configuration, and the version rule.
//!
//! Applying it (in `connect`): create the keyspace if missing, switch to
//! it, create `schema_version`, refuse a newer stored version, create every
//! missing table, then record this version with a lightweight transaction.
//! Every statement is `CREATE ... IF NOT EXISTS`, so applying the file to
//! an up-to-date keyspace changes nothing, and a node never drops or alters
//! anything.

use super::config::{Replication, Tablets};
use crate::error::{StorageError, StorageResult};

/// The schema file, compiled in.
pub const SCHEMA_CQL: &str = include_str!("../../schema.cql");

/// The schema version this build writes and understands (also stated in
/// the header of `schema.cql` as `-- schema_version: N`).
pub const SCHEMA_VERSION: i32 = 1;

/// The name of the version table, created before the version is checked.
pub const VERSION_TABLE: &str = "schema_version";

/// Splits CQL text into statements: comments (`--`, `//`, `/* */`) are
/// removed, `;` ends a statement, both only outside quoted strings and
/// identifiers; whitespace runs become one space; empty statements are
/// dropped.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            cur.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                cur.push(c);
            }
            '-' if chars.peek() == Some(&'-') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                cur.push(' ');
            }
            ';' => {
                push_statement(&mut out, &cur);
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    push_statement(&mut out, &cur);
    out
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

fn push_statement(out: &mut Vec<String>, raw: &str) {
    // Whitespace is collapsed outside quotes only.
    let mut s = String::with_capacity(raw.len());
    let mut quote: Option<char> = None;
    let mut last_space = true;
    for c in raw.chars() {
        match quote {
            Some(q) => {
                s.push(c);
                if c == q {
                    quote = None;
                }
                last_space = false;
            }
            None if c.is_whitespace() => {
                if !last_space {
                    s.push(' ');
                    last_space = true;
                }
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                s.push(c);
                last_space = false;
            }
        }
    }
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
}

/// The first words of a statement, uppercased (for classification).
fn head_words(stmt: &str, n: usize) -> Vec<String> {
    stmt.split_whitespace()
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

/// Whether a statement is `CREATE <KIND> IF NOT EXISTS ...`.
pub fn is_create_if_not_exists(stmt: &str) -> bool {
    let w = head_words(stmt, 5);
    w.len() == 5 && w[0] == "CREATE" && w[2] == "IF" && w[3] == "NOT" && w[4] == "EXISTS"
}

/// The table name of a `CREATE TABLE IF NOT EXISTS name (...)` statement.
pub fn created_table(stmt: &str) -> Option<String> {
    let w = head_words(stmt, 2);
    if !(is_create_if_not_exists(stmt) && w.get(1).map(String::as_str) == Some("TABLE")) {
        return None;
    }
    let name = stmt.split_whitespace().nth(5)?;
    let name = name.split('(').next()?.trim();
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// The schema as the node applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaPlan {
    /// `CREATE KEYSPACE IF NOT EXISTS` with the configured name and
    /// replication.
    pub keyspace: String,
    /// `CREATE TABLE IF NOT EXISTS schema_version ...`.
    pub version_table: String,
    /// Every other statement of the file, in file order.
    pub tables: Vec<String>,
}

/// Builds the plan from the schema text for keyspace `name`.
///
/// The file must hold exactly one `CREATE KEYSPACE IF NOT EXISTS`, one
/// `schema_version` table, and otherwise only `CREATE ... IF NOT EXISTS`
/// statements; anything else is a `Schema` error (a broken build).
pub fn plan(
    text: &str,
    name: &str,
    replication: &Replication,
    tablets: Tablets,
) -> StorageResult<SchemaPlan> {
    let bad = |m: String| StorageError::Schema(format!("schema.cql: {m}"));
    let mut keyspaces = 0;
    let mut version_table = None;
    let mut tables = Vec::new();
    for stmt in split_statements(text) {
        if !is_create_if_not_exists(&stmt) {
            return Err(bad(format!("not a CREATE ... IF NOT EXISTS: {stmt}")));
        }
        let kind = head_words(&stmt, 2).pop().unwrap_or_default();
        match kind.as_str() {
            "KEYSPACE" => keyspaces += 1,
            "TABLE" if created_table(&stmt).as_deref() == Some(VERSION_TABLE) => {
                version_table = Some(stmt)
            }
            "TABLE" | "TYPE" | "INDEX" => {
                if stmt.contains('.') && created_table(&stmt).is_some_and(|t| t.contains('.')) {
                    return Err(bad(format!("table names must be unqualified: {stmt}")));
                }
                tables.push(stmt);
            }
            other => return Err(bad(format!("unexpected CREATE {other}"))),
        }
    }
    if keyspaces != 1 {
        return Err(bad(format!(
            "{keyspaces} CREATE KEYSPACE statements, expected 1"
        )));
    }
    let version_table = version_table.ok_or_else(|| bad("no schema_version table".into()))?;
    Ok(SchemaPlan {
        keyspace: keyspace_statement(name, replication, tablets),
        version_table,
        tables,
    })
}

/// `CREATE KEYSPACE IF NOT EXISTS` for a validated keyspace name.
pub fn keyspace_statement(name: &str, replication: &Replication, tablets: Tablets) -> String {
    let tablets = match tablets {
        Tablets::Auto => "",
        Tablets::Enabled => " AND tablets = {'enabled': true}",
        Tablets::Disabled => " AND tablets = {'enabled': false}",
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = {} AND durable_writes = true{tablets}",
        replication.to_cql_map()
    )
}

/// The version stated in the file header (`-- schema_version: N`).
pub fn declared_version(text: &str) -> Option<i32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .filter_map(|l| l.trim().strip_prefix("schema_version:"))
        .find_map(|v| v.trim().parse().ok())
}

/// What start-up does about the stored schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// A fresh keyspace: record [`SCHEMA_VERSION`].
    Record,
    /// The stored version is older: record the new one over it.
    Upgrade {
        /// The version found.
        from: i32,
    },
    /// Already at [`SCHEMA_VERSION`].
    UpToDate,
}

/// Decides on a stored version; a newer one is refused, since this build
/// must not write data a newer schema may have changed the meaning of.
pub fn version_action(found: Option<i32>, keyspace: &str) -> StorageResult<VersionAction> {
    match found {
        None => Ok(VersionAction::Record),
        Some(v) if v > SCHEMA_VERSION => Err(StorageError::Schema(format!(
            "keyspace {keyspace} has schema version {v}, newer than this build understands \
             ({SCHEMA_VERSION}); upgrade Parley"
        ))),
        Some(v) if v < SCHEMA_VERSION => Ok(VersionAction::Upgrade { from: v }),
        Some(_) => Ok(VersionAction::UpToDate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_strips_comments_and_respects_quotes() {
        let text = "-- header; not a statement\n\
            CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY); // trailing; comment\n\
            /* block; comment */ CREATE TABLE IF NOT EXISTS b (\n  y text, -- col; comment\n  PRIMARY KEY (y)\n)\n\
            WITH comment = 'semi; colon -- not a comment';\n\n;  ;";
        assert_eq!(
            split_statements(text),
            vec![
                "CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY)".to_string(),
                "CREATE TABLE IF NOT EXISTS b ( y text, PRIMARY KEY (y) ) \
                 WITH comment = 'semi; colon -- not a comment'"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn the_schema_file_parses_as_the_node_expects() {
        let stmts = split_statements(SCHEMA_CQL);
        assert!(stmts.len() >= 12, "{stmts:#?}");
        for s in &stmts {
            assert!(
                is_create_if_not_exists(s),
                "not CREATE ... IF NOT EXISTS: {s}"
            );
            assert!(
                !s.contains("--") || s.contains('\''),
                "comment left in: {s}"
            );
        }
        let plan = plan(
            SCHEMA_CQL,
            "parley_test",
            &Replication::default(),
            Tablets::Auto,
        )
        .expect("schema plan");
        assert_eq!(
            plan.keyspace,
            "CREATE KEYSPACE IF NOT EXISTS parley_test WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true"
        );
        assert_eq!(
            created_table(&plan.version_table).as_deref(),
            Some(VERSION_TABLE)
        );
        let mut names: Vec<String> = plan
            .tables
            .iter()
            .filter_map(|t| created_table(t))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "client_msg_ids",
                "direct_rooms",
                "message_batches",
                "messages",
                "read_states",
                "refresh_tokens",
                "room_members",
                "rooms",
                "user_rooms",
                "usernames",
                "users",
            ]
        );
    }

    #[test]
    fn header_version_matches_the_code() {
        assert_eq!(declared_version(SCHEMA_CQL), Some(SCHEMA_VERSION));
    }

    #[test]
    fn keyspace_statement_renders_replication_and_tablets() {
        let nts: Replication = "network:dc1=3,dc2=2".parse().expect("nts");
        assert_eq!(
            keyspace_statement("parley", &nts, Tablets::Disabled),
            "CREATE KEYSPACE IF NOT EXISTS parley WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2} \
             AND durable_writes = true AND tablets = {'enabled': false}"
        );
    }

    #[test]
    fn plan_refuses_anything_but_create_if_not_exists() {
        let r = Replication::default();
        let base = "CREATE KEYSPACE IF NOT EXISTS k WITH replication = {};\
                    CREATE TABLE IF NOT EXISTS schema_version (id int PRIMARY KEY, version int);";
        assert!(plan(base, "k", &r, Tablets::Auto).is_ok());
        for extra in [
            "DROP TABLE users;",
            "CREATE TABLE users (a int PRIMARY KEY);",
            "ALTER TABLE users ADD x int;",
            "CREATE KEYSPACE IF NOT EXISTS other WITH replication = {};",
            "CREATE TABLE IF NOT EXISTS other.t (a int PRIMARY KEY);",
        ] {
            let text = format!("{base}{extra}");
            assert!(
                matches!(
                    plan(&text, "k", &r, Tablets::Auto),
                    Err(StorageError::Schema(_))
                ),
                "{extra}"
            );
        }
        assert!(plan(
            "CREATE KEYSPACE IF NOT EXISTS k WITH replication = {};",
            "k",
            &r,
            Tablets::Auto
        )
        .is_err());
    }

    #[test]
    fn newer_versions_are_refused() {
        assert_eq!(version_action(None, "k").ok(), Some(VersionAction::Record));
        assert_eq!(
            version_action(Some(SCHEMA_VERSION), "k").ok(),
            Some(VersionAction::UpToDate)
        );
        assert_eq!(
            version_action(Some(SCHEMA_VERSION - 1), "k").ok(),
            Some(VersionAction::Upgrade {
                from: SCHEMA_VERSION - 1
            })
        );
        match version_action(Some(SCHEMA_VERSION + 1), "parley") {
            Err(StorageError::Schema(m)) => {
                assert!(m.contains("newer") && m.contains("parley"), "{m}")
            }
            other => panic!("a newer schema must be refused, got {other:?}"),
        }
    }
}
