//! The conformance suite against the embedded store, plus embedded-only
//! checks: two handles on one file (two node processes), reopening, and a
//! schema newer than this build.

use std::sync::Arc;
use std::time::Instant;

use parley_storage::conformance;
use parley_storage::embedded::{EmbeddedStore, DB_FILE_NAME, SCHEMA_VERSION};
use parley_storage::{HistoryRange, NewMessage, RoomRecord, StorageError, Store, UserRecord};

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir).expect("open embedded store"))
}

/// A new, empty group room.
fn group_room(room_id: &str, name: &str, created_at: i64) -> RoomRecord {
    RoomRecord {
        room_id: room_id.into(),
        kind: "group".into(),
        name: name.into(),
        created_at,
        last_seq: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    if std::env::var_os("PARLEY_SCYLLA_NODES").is_some() {
        eprintln!(
            "PARLEY_SCYLLA_NODES is set: the ScyllaDB run of the conformance suite belongs to \
             the scylla backend's own test; this test covers the embedded store only"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let started = Instant::now();
    conformance::run_all(Arc::clone(&store)).await;
    eprintln!("conformance suite took {:?}", started.elapsed());
    // Everything uses fresh ids, so a second run on the same file passes too.
    conformance::run_all_with(store, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_act_as_one_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path());
    let b = open(dir.path());

    let user = UserRecord {
        user_id: "u-two-handles".into(),
        username: "twohandles".into(),
        password_hash: "h".into(),
        created_at: 1,
        last_seen: None,
    };
    a.create_user(&user).await.expect("create on a");
    assert_eq!(
        b.user_by_name("twohandles").await.expect("read on b"),
        Some(user.clone()),
        "b sees a's commit"
    );
    let dup = b.create_user(&user).await;
    assert!(matches!(dup, Err(StorageError::AlreadyExists)), "{dup:?}");

    let both = [Arc::clone(&a), Arc::clone(&b)];
    conformance::concurrent_registration_across(&both).await;
    conformance::concurrent_direct_room_across(&both).await;
    conformance::split_owner_across(Arc::clone(&a), Arc::clone(&b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let room = group_room("r-reopen", "persisted", 42);
    let msg = NewMessage {
        message_id: "m1".into(),
        sender_id: "u1".into(),
        sender_name: "one".into(),
        body: "still here ✓".into(),
        sent_at: 43,
        client_msg_id: "c1".into(),
    };
    {
        let store = open(dir.path());
        store.create_room(&room, &[]).await.expect("create_room");
        store
            .commit_messages("r-reopen", 0, std::slice::from_ref(&msg))
            .await
            .expect("commit");
    }
    assert!(
        dir.path().join(DB_FILE_NAME).is_file(),
        "database file exists"
    );
    let store = open(dir.path());
    let got = store
        .room("r-reopen")
        .await
        .expect("room")
        .expect("room kept");
    assert_eq!(got.last_seq, 1, "head kept");
    let history = store
        .messages(
            "r-reopen",
            HistoryRange::After {
                after_seq: 0,
                before_seq: None,
                limit: 10,
            },
        )
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, msg.body);
    let again = store
        .commit_messages("r-reopen", 1, std::slice::from_ref(&msg))
        .await
        .expect("resend after reopen");
    assert_eq!(
        again[0].message().seq,
        1,
        "idempotency key kept across reopen"
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(EmbeddedStore::open(dir.path()).expect("first open"));
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).expect("raw open");
        let version: u32 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .expect("schema_version row");
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute(
            "UPDATE schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .expect("bump version");
    }
    match EmbeddedStore::open(dir.path()) {
        Err(StorageError::Schema(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("opening a newer schema must fail with Schema, got {other:?}"),
    }
}

#[test]
fn open_creates_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a").join("b");
    let store = EmbeddedStore::open(&nested).expect("open nested");
    assert_eq!(store.path(), nested.join(DB_FILE_NAME));
    assert!(store.path().is_file());
}

/// Receipts share the committer's transactions with message commits: a
/// watermark write that fails (a seq past what SQLite stores) is undone
/// alone, and message commits queued with it still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_watermark_write_spares_the_commits_beside_it() {
    use parley_storage::Watermarks;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let room = group_room("r-mixed", "mixed", 1);
    store.create_room(&room, &[]).await.expect("create_room");
    let bad = [
        (
            "u-ok".to_string(),
            Watermarks {
                delivered_seq: 3,
                read_seq: 3,
            },
        ),
        (
            "u-bad".to_string(),
            Watermarks {
                delivered_seq: u64::MAX,
                read_seq: 0,
            },
        ),
    ];
    let good = [(
        "u-good".to_string(),
        Watermarks {
            delivered_seq: 2,
            read_seq: 1,
        },
    )];
    let mut commits = Vec::new();
    for i in 0..20u64 {
        let store = Arc::clone(&store);
        commits.push(tokio::spawn(async move {
            let msg = NewMessage {
                message_id: format!("m{i}"),
                sender_id: "u1".into(),
                sender_name: "one".into(),
                body: format!("body {i}"),
                sent_at: 2,
                client_msg_id: format!("c{i}"),
            };
            // Each retries on HeadMoved until it lands after the others.
            loop {
                let head = store
                    .room("r-mixed")
                    .await
                    .expect("room")
                    .map_or(0, |r| r.last_seq);
                match store
                    .commit_messages("r-mixed", head, std::slice::from_ref(&msg))
                    .await
                {
                    Ok(out) => return out,
                    Err(StorageError::HeadMoved { .. }) => continue,
                    Err(e) => panic!("commit failed: {e}"),
                }
            }
        }));
    }
    let (bad_result, good_result) = tokio::join!(
        store.raise_room_watermarks("r-mixed", &bad),
        store.raise_room_watermarks("r-mixed", &good),
    );
    assert!(bad_result.is_err(), "a seq past i64::MAX is refused");
    good_result.expect("the other room batch is written");
    for c in commits {
        assert_eq!(c.await.expect("commit task").len(), 1);
    }
    // The failed batch is undone as a whole, the good one kept.
    let ok = store
        .watermarks("u-ok", "r-mixed")
        .await
        .expect("watermarks");
    assert_eq!(ok, Watermarks::default(), "the failed batch left nothing");
    let good = store
        .watermarks("u-good", "r-mixed")
        .await
        .expect("watermarks");
    assert_eq!(
        good,
        Watermarks {
            delivered_seq: 2,
            read_seq: 1
        }
    );
    let history = store
        .messages(
            "r-mixed",
            HistoryRange::After {
                after_seq: 0,
                before_seq: None,
                limit: 50,
            },
        )
        .await
        .expect("history");
    assert_eq!(history.len(), 20, "every commit landed, gapless");
}

/// A new store is readable by the node's user only: its directory, the
/// database and the WAL SQLite creates next to it (password hashes and
/// every message live there).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_is_private_to_the_node_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = open(&data);
    store
        .create_user(&UserRecord {
            user_id: "u-private".into(),
            username: "private".into(),
            password_hash: "x".into(),
            created_at: 0,
            last_seen: None,
        })
        .await
        .expect("create user");
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(mode(""), 0o700, "the data dir");
    assert_eq!(mode(DB_FILE_NAME), 0o600);
    assert_eq!(mode(&format!("{DB_FILE_NAME}-wal")), 0o600);
}
