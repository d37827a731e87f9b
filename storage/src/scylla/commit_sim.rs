//! The commit protocol ([`commit`]) run offline against an in-memory model
//! of the tables it touches, with racing owners and injected failures.
//!
//! The model applies each operation atomically, as ScyllaDB applies a
//! single-partition write or a Paxos round, and yields between operations
//! so that owners interleave. Failures are injected before an operation
//! (nothing applied), in the middle of a multi-partition copy (part of it
//! applied, like a coordinator dying), and after a head claim applied (a
//! timeout whose outcome the caller never learns). The model itself checks
//! the core invariant on every write: a seq or a client id, once written,
//! is never written with different content. At the end, after one clean
//! commit has rolled the last batch forward, the checks are: history is
//! gapless up to the head, every acknowledged message is stored at the seq
//! it was acknowledged with, and no client id has two seqs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use super::commit::{commit, Claim, CommitIo};
use super::heads::HeadCache;
use super::rooms::RoomHead;
use crate::error::{StorageError, StorageResult};
use crate::model::{CommitOutcome, NewMessage, StoredMessage};

const ROOM: &str = "room";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `permille / 1000`.
    fn chance(&mut self, permille: u64) -> bool {
        self.next() % 1000 < permille
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Default)]
struct Tables {
    head: Option<RoomHead>,
    staged: HashMap<Uuid, Vec<StoredMessage>>,
    messages: BTreeMap<u64, StoredMessage>,
    client_ids: HashMap<String, u64>,
}

/// The model database with its fault injector.
struct SimDb {
    tables: Mutex<Tables>,
    rng: Mutex<Rng>,
    /// Per-mille chance that an operation fails.
    fault_permille: Mutex<u64>,
    /// Every applied claim answers as a conflict showing its own new head
    /// (as a coordinator that retried its Paxos round can).
    applied_as_moved: Mutex<bool>,
}

fn unavailable(what: &str) -> StorageError {
    StorageError::Unavailable(format!("injected: {what}"))
}

impl SimDb {
    fn new(seed: u64, fault_permille: u64) -> Self {
        SimDb {
            tables: Mutex::new(Tables {
                head: Some(RoomHead {
                    last_seq: 0,
                    pending: None,
                }),
                ..Tables::default()
            }),
            rng: Mutex::new(Rng(seed | 1)),
            fault_permille: Mutex::new(fault_permille),
            applied_as_moved: Mutex::new(false),
        }
    }

    fn chance(&self) -> bool {
        let p = *self.fault_permille.lock().expect("faults");
        self.rng.lock().expect("rng").chance(p)
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.lock().expect("rng").below(n)
    }

    /// Lets other owners run, then maybe fails before doing anything.
    async fn step(&self, what: &str) -> StorageResult<()> {
        tokio::task::yield_now().await;
        if self.chance() {
            return Err(unavailable(what));
        }
        Ok(())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("tables")
    }

    /// Writes one message, checking no seq is ever rewritten with other
    /// content.
    fn put_message(t: &mut Tables, m: &StoredMessage) {
        if let Some(old) = t.messages.get(&m.seq) {
            assert_eq!(old, m, "seq {} rewritten with other content", m.seq);
        }
        t.messages.insert(m.seq, m.clone());
    }

    /// Writes one message's id, checking the id is never given another seq
    /// and never written before its message (so an id read always points at
    /// a stored message).
    fn put_id(t: &mut Tables, m: &StoredMessage) {
        assert_eq!(
            t.messages.get(&m.seq),
            Some(m),
            "client id {} written before its message {}",
            m.client_msg_id,
            m.seq
        );
        if let Some(old) = t.client_ids.get(&m.client_msg_id) {
            assert_eq!(
                *old, m.seq,
                "client id {} given a second seq",
                m.client_msg_id
            );
        }
        t.client_ids.insert(m.client_msg_id.clone(), m.seq);
    }
}

impl SimDb {
    /// Concurrent per-partition writes: any subset may land before a
    /// failure; modelled as a random prefix, with other owners running in
    /// between.
    async fn write_part(
        &self,
        what: &str,
        msgs: &[StoredMessage],
        put: fn(&mut Tables, &StoredMessage),
    ) -> StorageResult<()> {
        self.step(what).await?;
        let n = if self.chance() {
            self.below(msgs.len() as u64) as usize
        } else {
            msgs.len()
        };
        for m in msgs.iter().take(n) {
            put(&mut self.tables(), m);
            tokio::task::yield_now().await;
        }
        if n < msgs.len() {
            return Err(unavailable(what));
        }
        Ok(())
    }
}

#[async_trait]
impl CommitIo for SimDb {
    async fn head_serial(&self, room_id: &str) -> StorageResult<Option<RoomHead>> {
        self.step("head read").await?;
        Ok(if room_id == ROOM {
            self.tables().head
        } else {
            None
        })
    }

    async fn staged(&self, _room_id: &str, batch_id: Uuid) -> StorageResult<Vec<StoredMessage>> {
        self.step("staged read").await?;
        Ok(self
            .tables()
            .staged
            .get(&batch_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn client_ids(
        &self,
        _room_id: &str,
        ids: &[&str],
    ) -> StorageResult<HashMap<String, u64>> {
        self.step("id lookup").await?;
        let t = self.tables();
        Ok(ids
            .iter()
            .filter_map(|id| t.client_ids.get(*id).map(|s| ((*id).to_owned(), *s)))
            .collect())
    }

    async fn messages_by_seq(
        &self,
        room_id: &str,
        seqs: &[u64],
    ) -> StorageResult<HashMap<u64, StoredMessage>> {
        self.step("messages read").await?;
        let t = self.tables();
        Ok(if room_id == ROOM {
            seqs.iter()
                .filter_map(|s| t.messages.get(s).map(|m| (*s, m.clone())))
                .collect()
        } else {
            HashMap::new()
        })
    }

    async fn stage(&self, batch_id: Uuid, msgs: &[StoredMessage]) -> StorageResult<()> {
        self.step("stage").await?;
        // Staging may also die half-way (several batches when large).
        let n = if self.chance() {
            self.below(msgs.len() as u64) as usize
        } else {
            msgs.len()
        };
        self.tables()
            .staged
            .insert(batch_id, msgs.get(..n).unwrap_or_default().to_vec());
        if n < msgs.len() {
            return Err(unavailable("stage, part written"));
        }
        Ok(())
    }

    async fn claim(
        &self,
        room_id: &str,
        expected: u64,
        new_head: u64,
        batch_id: Uuid,
        first_seq: u64,
    ) -> StorageResult<Claim> {
        self.step("claim").await?;
        let outcome = {
            let mut t = self.tables();
            match (room_id == ROOM).then_some(()).and(t.head.as_mut()) {
                None => Claim::Missing,
                Some(h) if h.last_seq != expected => Claim::Moved(h.last_seq),
                Some(h) => {
                    *h = RoomHead {
                        last_seq: new_head,
                        pending: Some((batch_id, first_seq)),
                    };
                    Claim::Applied
                }
            }
        };
        // A timeout after Paxos decided: applied, but the caller is told
        // nothing.
        if outcome == Claim::Applied && self.chance() {
            return Err(unavailable("claim applied, answer lost"));
        }
        if outcome == Claim::Applied
            && (*self.applied_as_moved.lock().expect("flag") || self.chance())
        {
            return Ok(Claim::Moved(new_head));
        }
        Ok(outcome)
    }

    async fn put_messages(&self, msgs: &[StoredMessage]) -> StorageResult<()> {
        self.write_part("put messages", msgs, Self::put_message)
            .await
    }

    async fn put_client_ids(&self, msgs: &[StoredMessage]) -> StorageResult<()> {
        self.write_part("put client ids", msgs, Self::put_id).await
    }
}

/// What the senders were told.
#[derive(Default)]
struct Acks {
    /// client id -> (seq, message id) acknowledged.
    by_client: HashMap<String, (u64, String)>,
}

impl Acks {
    fn record(&mut self, o: &CommitOutcome) {
        let m = o.message();
        if let Some((seq, id)) = self.by_client.get(&m.client_msg_id) {
            assert_eq!(
                (*seq, id.as_str()),
                (m.seq, m.message_id.as_str()),
                "client id {} acknowledged twice differently",
                m.client_msg_id
            );
        }
        self.by_client
            .insert(m.client_msg_id.clone(), (m.seq, m.message_id.clone()));
    }
}

fn new_message(owner: usize, n: u64) -> NewMessage {
    NewMessage {
        message_id: format!("mid-{owner}-{n}-{}", Uuid::now_v7()),
        sender_id: format!("u{owner}"),
        sender_name: format!("user {owner}"),
        body: format!("message {n} from owner {owner}"),
        sent_at: i64::try_from(n).unwrap_or(0),
        client_msg_id: format!("c-{owner}-{n}"),
    }
}

/// One room owner: commits batches like the room actor does (adopts the
/// head on `HeadMoved` and retries; on any other error the senders resend
/// later with the same client ids). Some senders also resend messages that
/// were already acknowledged; some messages are shared with other owners
/// (a client that sent through two nodes).
async fn owner(
    db: Arc<SimDb>,
    heads: Arc<HeadCache>,
    acks: Arc<Mutex<Acks>>,
    shared: Arc<Mutex<Vec<NewMessage>>>,
    me: usize,
    rounds: u64,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let mut head = 0u64;
    let mut resend: Vec<NewMessage> = Vec::new();
    let mut acked: Vec<NewMessage> = Vec::new();
    let mut n = 0u64;
    for _ in 0..rounds {
        let mut batch: Vec<NewMessage> = std::mem::take(&mut resend);
        for _ in 0..=rng.below(4) {
            n += 1;
            batch.push(new_message(me, n));
        }
        if !acked.is_empty() && rng.chance(300) {
            let i = rng.below(acked.len() as u64) as usize;
            batch.push(acked[i].clone());
        }
        if rng.chance(300) {
            let s = shared.lock().expect("shared");
            if !s.is_empty() {
                let i = rng.below(s.len() as u64) as usize;
                batch.push(s[i].clone());
            }
        } else if rng.chance(200) {
            n += 1;
            let m = new_message(me, n);
            shared.lock().expect("shared").push(m.clone());
            batch.push(m);
        }
        if rng.chance(100) {
            // A batch repeating a message within itself.
            if let Some(m) = batch.first().cloned() {
                batch.push(m);
            }
        }
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 1000, "owner {me} cannot make progress");
            let expected = head;
            match commit(&*db, &heads, ROOM, expected, &batch).await {
                Ok(outcomes) => {
                    assert_eq!(outcomes.len(), batch.len(), "one outcome per message");
                    let new_here: Vec<u64> = outcomes
                        .iter()
                        .filter_map(|o| match o {
                            CommitOutcome::Committed(c) => Some(c.seq),
                            CommitOutcome::Duplicate(_) => None,
                        })
                        .collect();
                    let mut a = acks.lock().expect("acks");
                    for (o, m) in outcomes.iter().zip(&batch) {
                        assert_eq!(o.message().client_msg_id, m.client_msg_id);
                        match o {
                            CommitOutcome::Committed(c) => {
                                assert_eq!(c.message_id, m.message_id, "committed as sent");
                                assert!(c.seq > expected, "new seqs are above the head");
                                head = head.max(c.seq);
                            }
                            // Success means the head was `expected`: what it
                            // duplicates lies below it, or is new in this batch.
                            CommitOutcome::Duplicate(d) => assert!(
                                d.seq <= expected || new_here.contains(&d.seq),
                                "owner {me}: duplicate at {} on a commit at head {expected}",
                                d.seq
                            ),
                        }
                        a.record(o);
                    }
                    acked.extend(batch.iter().cloned());
                    break;
                }
                Err(StorageError::HeadMoved { expected, actual }) => {
                    assert_eq!(expected, head);
                    assert_ne!(actual, head, "HeadMoved must name another head");
                    head = actual;
                }
                Err(StorageError::Unavailable(_)) => {
                    // Not acked: the senders will resend.
                    resend = batch;
                    break;
                }
                Err(e) => panic!("owner {me}: unexpected error {e}"),
            }
        }
    }
}

async fn run_scenario(seed: u64, owners: usize, rounds: u64, fault_permille: u64) {
    let db = Arc::new(SimDb::new(seed, fault_permille));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let shared = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for me in 0..owners {
        // Each owner is a node of its own: its own head cache.
        let heads = Arc::new(HeadCache::default());
        tasks.push(tokio::spawn(owner(
            Arc::clone(&db),
            heads,
            Arc::clone(&acks),
            Arc::clone(&shared),
            me,
            rounds,
            seed.wrapping_mul(31).wrapping_add(me as u64 + 7),
        )));
    }
    for t in tasks {
        t.await.expect("owner task");
    }

    // One clean commit by a fresh node rolls the last batch forward.
    *db.fault_permille.lock().expect("faults") = 0;
    let head = db.tables().head.map_or(0, |h| h.last_seq);
    let fresh = HeadCache::default();
    commit(&*db, &fresh, ROOM, head, &[])
        .await
        .expect("a clean empty commit at the head succeeds");

    let t = db.tables();
    let seqs: Vec<u64> = t.messages.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=head).collect::<Vec<_>>(),
        "seed {seed}: history is gapless up to the head"
    );
    let mut ids = std::collections::HashSet::new();
    for m in t.messages.values() {
        assert!(
            ids.insert(m.client_msg_id.clone()),
            "seed {seed}: client id {} stored twice",
            m.client_msg_id
        );
        assert_eq!(t.client_ids.get(&m.client_msg_id), Some(&m.seq));
    }
    let acks = acks.lock().expect("acks");
    for (cid, (seq, mid)) in &acks.by_client {
        let m = t
            .messages
            .get(seq)
            .unwrap_or_else(|| panic!("seed {seed}: acked {cid} at {seq} is missing"));
        assert_eq!(
            (&m.client_msg_id, &m.message_id),
            (cid, mid),
            "seed {seed}: seq {seq} holds what was acked"
        );
    }
    assert!(
        !acks.by_client.is_empty(),
        "seed {seed}: the scenario acknowledged something"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn racing_owners_without_failures() {
    for seed in 1..=20 {
        run_scenario(seed, 3, 40, 0).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn racing_owners_with_failures_everywhere() {
    for seed in 100..=160 {
        run_scenario(seed, 3, 40, 80).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_owners_on_threads() {
    for seed in 1_000..=1_010 {
        run_scenario(seed, 4, 30, 50).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_rooms_and_stale_heads() {
    let db = SimDb::new(5, 0);
    let heads = HeadCache::default();
    let m = new_message(0, 1);
    assert!(matches!(
        commit(&db, &heads, "nope", 0, std::slice::from_ref(&m)).await,
        Err(StorageError::NotFound)
    ));
    let out = commit(&db, &heads, ROOM, 0, std::slice::from_ref(&m))
        .await
        .expect("first commit");
    assert_eq!(out[0].message().seq, 1);
    // A second node with a stale head is refused and writes nothing.
    let other = HeadCache::default();
    let late = new_message(1, 1);
    match commit(&db, &other, ROOM, 0, std::slice::from_ref(&late)).await {
        Err(StorageError::HeadMoved {
            expected: 0,
            actual: 1,
        }) => {}
        other => panic!("stale head must be HeadMoved, got {other:?}"),
    }
    // The cached owner, bypassed by another owner, is refused by the claim.
    let third = HeadCache::default();
    commit(&db, &third, ROOM, 1, std::slice::from_ref(&late))
        .await
        .expect("commit at the real head");
    match commit(&db, &heads, ROOM, 1, &[new_message(0, 2)]).await {
        Err(StorageError::HeadMoved {
            expected: 1,
            actual: 2,
        }) => {}
        other => panic!("a stale cache must not win, got {other:?}"),
    }
    // An all-duplicate batch on a stale cached head is refused too.
    heads.remember(ROOM, 1);
    match commit(&db, &heads, ROOM, 1, std::slice::from_ref(&m)).await {
        Err(StorageError::HeadMoved {
            expected: 1,
            actual: 2,
        }) => {}
        other => panic!("a stale head with only duplicates must be HeadMoved, got {other:?}"),
    }
    assert_eq!(db.tables().messages.len(), 2);
}

/// A claimed batch whose staging rows cannot all be read: copied when the
/// missing seqs are in place already; `Unavailable` (and nothing copied)
/// while the rows may only be behind; copied as far as it goes once they
/// have expired for good, so the room goes on.
#[tokio::test(flavor = "current_thread")]
async fn a_claimed_batch_with_unreadable_staging_rows() {
    use super::commit::{staging_expired, STAGING_TTL};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use uuid::{NoContext, Timestamp};

    let at = |age: Duration| {
        let t = SystemTime::now() - age;
        let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        Uuid::new_v7(Timestamp::from_unix(NoContext, secs, 0))
    };
    let stored_at = |seq: u64| StoredMessage {
        room_id: ROOM.to_owned(),
        seq,
        message_id: format!("m{seq}"),
        sender_id: "u".into(),
        sender_name: "u".into(),
        body: format!("b{seq}"),
        sent_at: 0,
        client_msg_id: format!("c{seq}"),
    };
    assert!(!staging_expired(
        at(Duration::from_secs(60)),
        SystemTime::now()
    ));
    assert!(staging_expired(
        at(STAGING_TTL + Duration::from_secs(60)),
        SystemTime::now()
    ));

    // Seqs 1-2 in place; a batch 3-4 claimed, with only seq 3 staged.
    let setup = |batch_id: Uuid, seq_4_in_place: bool| {
        let db = SimDb::new(9, 0);
        {
            let mut t = db.tables();
            let in_place: Vec<u64> = if seq_4_in_place {
                vec![1, 2, 3, 4]
            } else {
                vec![1, 2]
            };
            for s in in_place {
                SimDb::put_message(&mut t, &stored_at(s));
                SimDb::put_id(&mut t, &stored_at(s));
            }
            t.staged.insert(batch_id, vec![stored_at(3)]);
            t.head = Some(RoomHead {
                last_seq: 4,
                pending: Some((batch_id, 3)),
            });
        }
        db
    };
    let next = [new_message(0, 1)];

    // Copied long ago: staging rows gone, messages in place.
    let db = setup(at(STAGING_TTL * 2), true);
    let out = commit(&db, &HeadCache::default(), ROOM, 4, &next)
        .await
        .expect("nothing is missing");
    assert_eq!(out[0].message().seq, 5);

    // Seq 4 neither staged nor in place, staged a minute ago: a replica
    // behind. Nothing is copied, nothing committed.
    let db = setup(at(Duration::from_secs(60)), false);
    match commit(&db, &HeadCache::default(), ROOM, 4, &next).await {
        Err(StorageError::Unavailable(_)) => {}
        other => panic!("a short staged batch must be Unavailable, got {other:?}"),
    }
    assert_eq!(db.tables().messages.len(), 2);
    assert_eq!(db.tables().head.map(|h| h.last_seq), Some(4));

    // The same, staged beyond the TTL: seq 3 is copied, 4 stays empty,
    // and the room takes new messages again.
    let db = setup(at(STAGING_TTL + Duration::from_secs(3600)), false);
    let out = commit(&db, &HeadCache::default(), ROOM, 4, &next)
        .await
        .expect("the room goes on");
    assert_eq!(out[0].message().seq, 5);
    let seqs: Vec<u64> = db.tables().messages.keys().copied().collect();
    assert_eq!(seqs, vec![1, 2, 3, 5]);
}

/// A claim that applied but answers as a conflict showing its own new head
/// is recognised by the batch the head names: the commit succeeds with its
/// messages committed (before, it was `HeadMoved`, and the senders' resends
/// came back as duplicates that the room never delivered live).
#[tokio::test(flavor = "current_thread")]
async fn a_claim_reported_as_its_own_conflict_still_commits() {
    let db = SimDb::new(11, 0);
    *db.applied_as_moved.lock().expect("flag") = true;
    let heads = HeadCache::default();
    let batch = [new_message(0, 1), new_message(0, 2)];
    let out = commit(&db, &heads, ROOM, 0, &batch)
        .await
        .expect("the batch is this commit's");
    assert!(out.iter().all(|o| matches!(o, CommitOutcome::Committed(_))));
    assert_eq!(db.tables().messages.len(), 2);
    // Another owner (its head cached at 0) whose claim truly lost, on a
    // conflict showing the very head it asked for, is still refused.
    let other = HeadCache::default();
    other.remember(ROOM, 0);
    match commit(
        &db,
        &other,
        ROOM,
        0,
        &[new_message(1, 1), new_message(1, 2)],
    )
    .await
    {
        Err(StorageError::HeadMoved {
            expected: 0,
            actual: 2,
        }) => {}
        other => panic!("a real conflict must stay HeadMoved, got {other:?}"),
    }
}

/// Settling a room whose committer died after its claim, before the copy:
/// the batch is written into history, the head is cached, and an unknown
/// room is no error.
#[tokio::test(flavor = "current_thread")]
async fn settling_a_room_copies_its_claimed_batch() {
    use super::commit::settle;

    let db = SimDb::new(13, 0);
    let batch_id = Uuid::now_v7();
    let staged: Vec<StoredMessage> = [1u64, 2]
        .iter()
        .map(|seq| StoredMessage {
            room_id: ROOM.to_owned(),
            seq: *seq,
            message_id: format!("m{seq}"),
            sender_id: "u".into(),
            sender_name: "u".into(),
            body: "b".into(),
            sent_at: 0,
            client_msg_id: format!("c{seq}"),
        })
        .collect();
    {
        let mut t = db.tables();
        t.staged.insert(batch_id, staged);
        t.head = Some(RoomHead {
            last_seq: 2,
            pending: Some((batch_id, 1)),
        });
    }
    let heads = HeadCache::default();
    settle(&db, &heads, ROOM).await.expect("settled");
    assert_eq!(db.tables().messages.len(), 2);
    assert_eq!(db.tables().client_ids.len(), 2);
    assert!(heads.is_known(ROOM, 2));
    settle(&db, &heads, "no such room")
        .await
        .expect("nothing to settle");
}
