//! Offline checks of every statement against `schema.cql`, without a
//! server.
//!
//! A tiny parser reads the `CREATE TABLE` column lists and keys of the
//! schema file. Then, for every [`Stmt`]:
//!
//! - its table exists and every identifier in it is a column of that table
//!   (or a CQL keyword);
//! - it addresses exactly one partition: every partition key column is
//!   bound with `=` (or listed, for an `INSERT`);
//! - `IF` appears exactly in the lightweight transactions, `SELECT` exactly
//!   in the reads;
//! - its binder produces as many values as it has markers, and those
//!   values serialize against the marker types derived from the schema
//!   (the same type check the driver runs against a server's metadata);
//! - the Rust row type the code decodes its rows into passes the driver's
//!   type check against the selected columns' schema types;
//! - its consistency, serial consistency and idempotency are as the table
//!   in [`statements`](super::statements) says.

use std::collections::{HashMap, HashSet};

use scylla::deserialize::row::DeserializeRow;
use scylla::frame::response::result::{
    CollectionType, ColumnSpec, ColumnType, NativeType, TableSpec,
};
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::{Consistency, SerialConsistency};
use uuid::Uuid;

use super::binds::{self, Arity, Bound};
use super::messages::{ClientIdRow, MessageRow};
use super::read_states::{MarksRow, RoomMarksRow};
use super::rooms::{DirectRow, MemberIdRow, MemberRow, RoomRow, UserRoomRow};
use super::schema::{created_table, split_statements, SCHEMA_CQL};
use super::statements::{Stmt, StmtFlags, StmtKind};
use super::tokens::TokenRow;
use super::users::{UserRow, UsernameRow};
use crate::model::{MemberRecord, RefreshTokenRecord, RoomRecord, StoredMessage, UserRecord};

/// One table of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    columns: Vec<(String, String)>,
    partition_key: Vec<String>,
    clustering: Vec<String>,
}

impl Table {
    fn column_type(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.as_str())
    }
}

/// Splits at top-level commas (outside parentheses and angle brackets).
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            out.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The parenthesised body right after the table name.
fn table_body(stmt: &str) -> Option<&str> {
    let open = stmt.find('(')?;
    let mut depth = 0;
    for (i, c) in stmt[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return stmt.get(open + 1..open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn key_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|k| {
            k.trim()
                .trim_matches(|c| c == '(' || c == ')')
                .trim()
                .to_owned()
        })
        .filter(|k| !k.is_empty())
        .collect()
}

/// Parses the tables of a schema text.
fn parse_tables(text: &str) -> HashMap<String, Table> {
    let mut out = HashMap::new();
    for stmt in split_statements(text) {
        let Some(name) = created_table(&stmt) else {
            continue;
        };
        let body = table_body(&stmt).unwrap_or_else(|| panic!("no column list: {stmt}"));
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering = Vec::new();
        for part in split_top(body) {
            let upper = part.to_ascii_uppercase();
            if let Some(keys) = upper.strip_prefix("PRIMARY KEY") {
                let keys = part[part.len() - keys.len()..].trim();
                let inner = keys
                    .strip_prefix('(')
                    .and_then(|k| k.strip_suffix(')'))
                    .unwrap_or(keys)
                    .trim();
                if let Some(rest) = inner.strip_prefix('(') {
                    let (pk, ck) = rest.split_once(')').unwrap_or((rest, ""));
                    partition_key = key_list(pk);
                    clustering = key_list(ck);
                } else {
                    let mut all = key_list(inner);
                    if !all.is_empty() {
                        partition_key = vec![all.remove(0)];
                    }
                    clustering = all;
                }
                continue;
            }
            let mut words = part.split_whitespace();
            let col = words.next().unwrap_or_default().to_ascii_lowercase();
            let typ = words.next().unwrap_or_default().to_ascii_lowercase();
            if upper.ends_with("PRIMARY KEY") {
                partition_key = vec![col.clone()];
            }
            columns.push((col, typ));
        }
        out.insert(
            name,
            Table {
                columns,
                partition_key,
                clustering,
            },
        );
    }
    out
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "IN",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "LIMIT",
    "INSERT",
    "INTO",
    "VALUES",
    "IF",
    "NOT",
    "EXISTS",
    "UPDATE",
    "SET",
    "DELETE",
    "USING",
    "TTL",
    "TIMESTAMP",
];

fn is_keyword(t: &str) -> bool {
    KEYWORDS.contains(&t.to_ascii_uppercase().as_str())
}

/// Tokens: identifiers, numbers, `?`, operators and punctuation.
fn tokenize(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = cql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            let mut w = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    w.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(w);
        } else if (c == '>' || c == '<') && chars.peek() == Some(&'=') {
            chars.next();
            out.push(format!("{c}="));
        } else {
            out.push(c.to_string());
        }
    }
    out
}

/// What the analysis of one statement found.
#[derive(Debug)]
struct Analysis {
    table: String,
    /// Selected columns, in order (SELECT only).
    selected: Vec<String>,
    /// The type of each marker, in order.
    markers: Vec<ColumnType<'static>>,
    /// Columns restricted with `=` in WHERE (or inserted, for INSERT).
    keyed: HashSet<String>,
    /// Every identifier that is not a keyword.
    identifiers: Vec<String>,
}

fn native(t: &str) -> ColumnType<'static> {
    let n = match t {
        "text" | "varchar" => NativeType::Text,
        "bigint" => NativeType::BigInt,
        "int" => NativeType::Int,
        "uuid" => NativeType::Uuid,
        "timeuuid" => NativeType::Timeuuid,
        "boolean" => NativeType::Boolean,
        other => panic!("type {other} not known to the lint"),
    };
    ColumnType::Native(n)
}

fn analyze(stmt: Stmt, tables: &HashMap<String, Table>) -> Analysis {
    let toks = tokenize(stmt.cql());
    let upper: Vec<String> = toks.iter().map(|t| t.to_ascii_uppercase()).collect();
    let pos = |kw: &str| upper.iter().position(|t| t == kw);
    let table = match upper.first().map(String::as_str) {
        Some("SELECT") | Some("DELETE") => pos("FROM").and_then(|i| toks.get(i + 1)),
        Some("INSERT") => pos("INTO").and_then(|i| toks.get(i + 1)),
        Some("UPDATE") => toks.get(1),
        _ => None,
    }
    .unwrap_or_else(|| panic!("{stmt:?}: no table"))
    .to_ascii_lowercase();
    let t = tables
        .get(&table)
        .unwrap_or_else(|| panic!("{stmt:?}: table {table} is not in schema.cql"));
    let col_type = |c: &str| -> ColumnType<'static> {
        native(
            t.column_type(&c.to_ascii_lowercase())
                .unwrap_or_else(|| panic!("{stmt:?}: {table} has no column {c}")),
        )
    };

    let mut selected = Vec::new();
    if upper[0] == "SELECT" {
        let from = pos("FROM").unwrap_or(0);
        selected = toks[1..from]
            .iter()
            .filter(|t| *t != ",")
            .map(|t| t.to_ascii_lowercase())
            .collect();
    }

    // INSERT: the column list and the VALUES list, positionally.
    let mut insert_cols: Vec<String> = Vec::new();
    let mut values_start = usize::MAX;
    if upper[0] == "INSERT" {
        let open = pos("(").unwrap_or(0);
        let close = toks.iter().position(|t| t == ")").unwrap_or(0);
        insert_cols = toks[open + 1..close]
            .iter()
            .filter(|t| *t != ",")
            .map(|t| t.to_ascii_lowercase())
            .collect();
        values_start = pos("VALUES").unwrap_or(usize::MAX);
    }

    let mut markers = Vec::new();
    let mut keyed: HashSet<String> = insert_cols.iter().cloned().collect();
    let mut value_index = 0usize;
    let where_at = pos("WHERE").unwrap_or(usize::MAX);
    let if_at = pos("IF").unwrap_or(usize::MAX);
    for (i, tok) in toks.iter().enumerate() {
        if i > values_start && i < values_start + 2 * insert_cols.len() + 2 {
            // Inside VALUES ( v, v, ... ): each value is the next column.
            if tok == "," || tok == "(" || tok == ")" {
                continue;
            }
            let col = insert_cols
                .get(value_index)
                .unwrap_or_else(|| panic!("{stmt:?}: more values than columns"));
            value_index += 1;
            if tok == "?" {
                markers.push(col_type(col));
            }
            continue;
        }
        if tok != "?" {
            continue;
        }
        let prev = upper.get(i.wrapping_sub(1)).map(String::as_str);
        let before = toks.get(i.wrapping_sub(2)).map(|s| s.to_ascii_lowercase());
        match prev {
            Some("LIMIT") | Some("TTL") => markers.push(ColumnType::Native(NativeType::Int)),
            Some("TIMESTAMP") => markers.push(ColumnType::Native(NativeType::BigInt)),
            Some("IN") => {
                let col = before.unwrap_or_else(|| panic!("{stmt:?}: IN without column"));
                markers.push(ColumnType::Collection {
                    frozen: false,
                    typ: CollectionType::List(Box::new(col_type(&col))),
                });
                if i > where_at && i < if_at {
                    keyed.insert(col);
                }
            }
            Some("=") | Some(">=") | Some("<=") | Some("<") | Some(">") => {
                let col = before.unwrap_or_else(|| panic!("{stmt:?}: operator without column"));
                markers.push(col_type(&col));
                if prev == Some("=") && i > where_at && i < if_at {
                    keyed.insert(col);
                }
            }
            other => panic!("{stmt:?}: marker after {other:?} not understood by the lint"),
        }
    }
    if upper[0] == "INSERT" {
        assert_eq!(
            value_index,
            insert_cols.len(),
            "{stmt:?}: VALUES count differs from the column list"
        );
    }

    let identifiers = toks
        .iter()
        .filter(|t| {
            t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        })
        .filter(|t| !is_keyword(t))
        .filter(|t| t.to_ascii_lowercase() != table)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    Analysis {
        table,
        selected,
        markers,
        keyed,
        identifiers,
    }
}

fn specs(table: &str, cols: &[(String, ColumnType<'static>)]) -> Vec<ColumnSpec<'static>> {
    cols.iter()
        .map(|(n, t)| {
            ColumnSpec::owned(
                n.clone(),
                t.clone(),
                TableSpec::owned("parley".into(), table.into()),
            )
        })
        .collect()
}

/// Serializes a binder's values against the marker types.
fn serializes<V: SerializeRow + Arity>(
    b: &Bound<V>,
    markers: &[ColumnSpec<'_>],
) -> Result<(), String> {
    if b.arity() != markers.len() {
        return Err(format!(
            "{} values for {} markers",
            b.arity(),
            markers.len()
        ));
    }
    let ctx = RowSerializationContext::from_specs(markers);
    let mut buf = Vec::new();
    let mut w = RowWriter::new(&mut buf);
    b.values.serialize(&ctx, &mut w).map_err(|e| e.to_string())
}

fn user() -> UserRecord {
    UserRecord {
        user_id: "u".into(),
        username: "name".into(),
        password_hash: "h".into(),
        created_at: 1,
        last_seen: Some(2),
    }
}

fn message() -> StoredMessage {
    StoredMessage {
        room_id: "r".into(),
        seq: 16_384,
        message_id: "m".into(),
        sender_id: "s".into(),
        sender_name: "S".into(),
        body: "b".into(),
        sent_at: 3,
        client_msg_id: "c".into(),
    }
}

/// Builds `stmt`'s values with its binder and serializes them against the
/// marker types. Exhaustive: a new statement without a binder check does
/// not compile.
fn check_binder(stmt: Stmt, markers: &[ColumnSpec<'_>]) -> Result<Stmt, String> {
    let u = user();
    let m = message();
    let token = RefreshTokenRecord {
        token_hash: "t".into(),
        user_id: "u".into(),
        expires_at: 9,
    };
    let room = RoomRecord {
        room_id: "r".into(),
        kind: "group".into(),
        name: "n".into(),
        created_at: 1,
        last_seq: 0,
    };
    let member = MemberRecord {
        user_id: "u".into(),
        username: "n".into(),
        role: "owner".into(),
        joined_at: 1,
    };
    let e = |e: crate::StorageError| e.to_string();
    macro_rules! check {
        ($b:expr) => {{
            let b = $b;
            serializes(&b, markers)?;
            Ok(b.stmt)
        }};
    }
    match stmt {
        Stmt::VersionGet => check!(binds::version_get()),
        Stmt::VersionInsert => check!(binds::version_insert(1)),
        Stmt::VersionUpdate => check!(binds::version_update(2, 1)),
        Stmt::Ping => check!(binds::ping()),
        Stmt::UserInsert => check!(binds::user_insert(&u)),
        Stmt::UserDelete => check!(binds::user_delete("u")),
        Stmt::UserById => check!(binds::user_by_id("u")),
        Stmt::UserSetLastSeen => check!(binds::user_set_last_seen("u", 5)),
        Stmt::UsernameClaim => check!(binds::username_claim("n", "u")),
        Stmt::UsernameGet => check!(binds::username_get("n")),
        Stmt::TokenPut => check!(binds::token_put(&token, 60)),
        Stmt::TokenGet => check!(binds::token_get("t")),
        Stmt::TokenTake => check!(binds::token_take(&token)),
        Stmt::RoomInsert => check!(binds::room_insert(&room)),
        Stmt::RoomGet => check!(binds::room_get("r")),
        Stmt::RoomGetSerial => check!(binds::room_get_serial("r")),
        Stmt::RoomRename => check!(binds::room_rename("r", "n")),
        Stmt::RoomClaim => check!(binds::room_claim("r", 3, 5, Uuid::now_v7(), 4).map_err(e)?),
        Stmt::MemberPut => check!(binds::member_put("r", &member)),
        Stmt::MemberDelete => check!(binds::member_delete("r", "u")),
        Stmt::MembersOfRoom => check!(binds::members_of_room("r")),
        Stmt::MemberIdsOfRoom => check!(binds::member_ids_of_room("r", 10)),
        Stmt::MemberGet => check!(binds::member_get("r", "u")),
        Stmt::UserRoomPut => check!(binds::user_room_put("u", "r")),
        Stmt::UserRoomDelete => check!(binds::user_room_delete("u", "r")),
        Stmt::UserRoomsOfUser => check!(binds::user_rooms_of_user("u")),
        Stmt::DirectGet => check!(binds::direct_get("a:b")),
        Stmt::DirectClaim => check!(binds::direct_claim("a:b", "r")),
        Stmt::MessageInsert => check!(binds::message_insert(&m).map_err(e)?),
        Stmt::MessagesAsc => check!(binds::messages_range("r", 1, 16_384, 16_400, 10, false)),
        Stmt::MessagesDesc => check!(binds::messages_range("r", 1, 16_384, 16_400, 10, true)),
        Stmt::MessagesBySeq => check!(binds::messages_by_seq("r", 1, vec![16_384, 16_385])),
        Stmt::StagedInsert => check!(binds::staged_insert(Uuid::now_v7(), &m).map_err(e)?),
        Stmt::StagedGet => check!(binds::staged_get("r", Uuid::now_v7())),
        Stmt::ClientIdInsert => check!(binds::client_id_insert(&m).map_err(e)?),
        Stmt::ClientIdsGet => check!(binds::client_ids_get("r", vec!["a", "b"])),
        Stmt::DeliveredRaise => check!(binds::delivered_raise("r", "u", 7).map_err(e)?),
        Stmt::ReadRaise => check!(binds::read_raise("r", "u", 7).map_err(e)?),
        Stmt::WatermarksGet => check!(binds::watermarks_get("r", "u")),
        Stmt::WatermarksOfRoom => check!(binds::watermarks_of_room("r")),
    }
}

/// Type-checks the row type the code decodes `stmt`'s rows into.
/// Exhaustive, like [`check_binder`]; LWT results are decoded untyped.
fn check_row_type(stmt: Stmt, cols: &[ColumnSpec<'_>]) -> Result<(), String> {
    fn tc<R: for<'f, 'm> DeserializeRow<'f, 'm>>(cols: &[ColumnSpec<'_>]) -> Result<(), String> {
        R::type_check(cols).map_err(|e| e.to_string())
    }
    match stmt {
        Stmt::VersionGet | Stmt::Ping => tc::<binds::VersionRow>(cols),
        Stmt::UserById => tc::<UserRow>(cols),
        Stmt::UsernameGet => tc::<UsernameRow>(cols),
        Stmt::TokenGet => tc::<TokenRow>(cols),
        Stmt::RoomGet | Stmt::RoomGetSerial => tc::<RoomRow>(cols),
        Stmt::MembersOfRoom | Stmt::MemberGet => tc::<MemberRow>(cols),
        Stmt::MemberIdsOfRoom => tc::<MemberIdRow>(cols),
        Stmt::UserRoomsOfUser => tc::<UserRoomRow>(cols),
        Stmt::DirectGet => tc::<DirectRow>(cols),
        Stmt::MessagesAsc | Stmt::MessagesDesc | Stmt::MessagesBySeq | Stmt::StagedGet => {
            tc::<MessageRow>(cols)
        }
        Stmt::ClientIdsGet => tc::<ClientIdRow>(cols),
        Stmt::WatermarksGet => tc::<MarksRow>(cols),
        Stmt::WatermarksOfRoom => tc::<RoomMarksRow>(cols),
        Stmt::VersionInsert
        | Stmt::VersionUpdate
        | Stmt::UserInsert
        | Stmt::UserDelete
        | Stmt::UserSetLastSeen
        | Stmt::UsernameClaim
        | Stmt::TokenPut
        | Stmt::TokenTake
        | Stmt::RoomInsert
        | Stmt::RoomRename
        | Stmt::RoomClaim
        | Stmt::MemberPut
        | Stmt::MemberDelete
        | Stmt::UserRoomPut
        | Stmt::UserRoomDelete
        | Stmt::DirectClaim
        | Stmt::MessageInsert
        | Stmt::StagedInsert
        | Stmt::ClientIdInsert
        | Stmt::DeliveredRaise
        | Stmt::ReadRaise => {
            if cols.is_empty() {
                Ok(())
            } else {
                Err("a write has no result columns to decode".into())
            }
        }
    }
}

#[test]
fn schema_tables_parse() {
    let tables = parse_tables(SCHEMA_CQL);
    let messages = &tables["messages"];
    assert_eq!(messages.partition_key, ["room_id", "bucket"]);
    assert_eq!(messages.clustering, ["seq"]);
    assert_eq!(messages.column_type("body"), Some("text"));
    assert_eq!(tables["users"].partition_key, ["user_id"]);
    assert!(tables["users"].clustering.is_empty());
    assert_eq!(tables["read_states"].partition_key, ["room_id"]);
    assert_eq!(tables["read_states"].clustering, ["user_id"]);
    assert_eq!(tables["rooms"].column_type("pending_batch"), Some("uuid"));
    for (name, t) in &tables {
        assert!(!t.partition_key.is_empty(), "{name} has a partition key");
        for k in t.partition_key.iter().chain(&t.clustering) {
            assert!(
                t.column_type(k).is_some(),
                "{name}: key column {k} declared"
            );
        }
    }
}

#[test]
fn every_statement_matches_the_schema() {
    let tables = parse_tables(SCHEMA_CQL);
    for &stmt in Stmt::ALL {
        let a = analyze(stmt, &tables);
        let t = &tables[&a.table];
        for id in &a.identifiers {
            assert!(
                t.column_type(id).is_some(),
                "{stmt:?}: {id} is not a column of {}",
                a.table
            );
        }
        for k in &t.partition_key {
            assert!(
                a.keyed.contains(k),
                "{stmt:?}: partition key column {k} of {} is not bound with =",
                a.table
            );
        }
        if stmt.kind() == StmtKind::Write && stmt.cql().starts_with("DELETE") {
            for k in &t.clustering {
                assert!(a.keyed.contains(k), "{stmt:?}: deletes exactly one row");
            }
        }
        assert_eq!(
            a.markers.len(),
            stmt.markers(),
            "{stmt:?}: marker analysis disagrees with the marker count"
        );

        let marker_specs = specs(
            &a.table,
            &a.markers
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("m{i}"), t.clone()))
                .collect::<Vec<_>>(),
        );
        let bound = check_binder(stmt, &marker_specs)
            .unwrap_or_else(|e| panic!("{stmt:?}: values do not fit the markers: {e}"));
        assert_eq!(
            bound, stmt,
            "the binder of {stmt:?} binds another statement"
        );

        let result_specs = specs(
            &a.table,
            &a.selected
                .iter()
                .map(|c| {
                    let typ = t
                        .column_type(c)
                        .unwrap_or_else(|| panic!("{stmt:?}: selects unknown {c}"));
                    (c.clone(), native(typ))
                })
                .collect::<Vec<_>>(),
        );
        check_row_type(stmt, &result_specs)
            .unwrap_or_else(|e| panic!("{stmt:?}: the decoded row type does not fit: {e}"));
    }
}

#[test]
fn statement_kinds_match_their_text() {
    for &stmt in Stmt::ALL {
        let toks: Vec<String> = tokenize(stmt.cql())
            .iter()
            .map(|t| t.to_ascii_uppercase())
            .collect();
        let has_if = toks.iter().any(|t| t == "IF");
        let is_select = toks.first().map(String::as_str) == Some("SELECT");
        assert_eq!(has_if, stmt.kind() == StmtKind::Lwt, "{stmt:?}: IF <=> LWT");
        assert_eq!(
            is_select,
            matches!(stmt.kind(), StmtKind::Read | StmtKind::SerialRead),
            "{stmt:?}: SELECT <=> read"
        );
        assert!(
            !toks
                .iter()
                .any(|t| t == "ALLOW" || t == "BATCH" || t == "TRUNCATE" || t == "DROP"),
            "{stmt:?}: no filtering scans, inline batches or destructive DDL"
        );
    }
}

#[test]
fn consistency_and_idempotency_per_statement() {
    use Consistency::{LocalQuorum, LocalSerial, Quorum, Serial};
    let lq = |idempotent| StmtFlags {
        consistency: LocalQuorum,
        serial_consistency: None,
        idempotent,
    };
    let lwt = StmtFlags {
        consistency: LocalQuorum,
        serial_consistency: Some(SerialConsistency::LocalSerial),
        idempotent: false,
    };
    let serial_read = StmtFlags {
        consistency: LocalSerial,
        serial_consistency: None,
        idempotent: true,
    };
    let table: &[(Stmt, StmtFlags)] = &[
        (Stmt::VersionGet, serial_read),
        (Stmt::VersionInsert, lwt),
        (Stmt::VersionUpdate, lwt),
        (Stmt::Ping, lq(true)),
        (Stmt::UserInsert, lwt),
        (Stmt::UserDelete, lwt),
        (Stmt::UserById, lq(true)),
        (Stmt::UserSetLastSeen, lq(true)),
        (Stmt::UsernameClaim, lwt),
        (Stmt::UsernameGet, lq(true)),
        (Stmt::TokenPut, lwt),
        (Stmt::TokenGet, lq(true)),
        (Stmt::TokenTake, lwt),
        (Stmt::RoomInsert, lwt),
        (Stmt::RoomGet, lq(true)),
        (Stmt::RoomGetSerial, serial_read),
        (Stmt::RoomRename, lwt),
        (Stmt::RoomClaim, lwt),
        (Stmt::MemberPut, lq(true)),
        (Stmt::MemberDelete, lq(true)),
        (Stmt::MembersOfRoom, lq(true)),
        (Stmt::MemberIdsOfRoom, lq(true)),
        (Stmt::MemberGet, lq(true)),
        (Stmt::UserRoomPut, lq(true)),
        (Stmt::UserRoomDelete, lq(true)),
        (Stmt::UserRoomsOfUser, lq(true)),
        (Stmt::DirectGet, lq(true)),
        (Stmt::DirectClaim, lwt),
        (Stmt::MessageInsert, lq(true)),
        (Stmt::MessagesAsc, lq(true)),
        (Stmt::MessagesDesc, lq(true)),
        (Stmt::MessagesBySeq, lq(true)),
        (Stmt::StagedInsert, lq(true)),
        (Stmt::StagedGet, lq(true)),
        (Stmt::ClientIdInsert, lq(true)),
        (Stmt::ClientIdsGet, lq(true)),
        (Stmt::DeliveredRaise, lq(true)),
        (Stmt::ReadRaise, lq(true)),
        (Stmt::WatermarksGet, lq(true)),
        (Stmt::WatermarksOfRoom, lq(true)),
    ];
    let listed: HashSet<Stmt> = table.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        listed.len(),
        Stmt::ALL.len(),
        "every statement is in the table once"
    );
    for (stmt, want) in table {
        assert_eq!(
            stmt.flags(LocalQuorum, SerialConsistency::LocalSerial),
            *want,
            "{stmt:?}"
        );
    }
    // Configured levels are passed through.
    assert_eq!(
        Stmt::RoomClaim.flags(Quorum, SerialConsistency::Serial),
        StmtFlags {
            consistency: Quorum,
            serial_consistency: Some(SerialConsistency::Serial),
            idempotent: false
        }
    );
    assert_eq!(
        Stmt::RoomGetSerial
            .flags(Quorum, SerialConsistency::Serial)
            .consistency,
        Serial
    );
}

#[test]
fn the_lint_catches_mistakes() {
    // The checks above must be able to fail: a wrong column, a missing
    // partition key, a type mismatch.
    let tables = parse_tables(
        "CREATE TABLE IF NOT EXISTS t (a text, b bigint, c int, PRIMARY KEY ((a), b));",
    );
    let t = &tables["t"];
    assert_eq!(t.partition_key, ["a"]);
    assert_eq!(t.clustering, ["b"]);
    let good = Bound {
        stmt: Stmt::Ping,
        values: ("x", 1i64),
    };
    let specs_ok = specs(
        "t",
        &[("a".into(), native("text")), ("b".into(), native("bigint"))],
    );
    assert!(serializes(&good, &specs_ok).is_ok());
    let specs_bad = specs(
        "t",
        &[("a".into(), native("text")), ("c".into(), native("int"))],
    );
    assert!(
        serializes(&good, &specs_bad).is_err(),
        "i64 into int refused"
    );
    assert!(serializes(&good, &specs_ok[..1]).is_err(), "arity checked");
    assert!(<UserRow as DeserializeRow>::type_check(&specs_ok).is_err());
}
