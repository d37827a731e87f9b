//! Users, last-seen and refresh tokens.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::support::{fresh_id, now_ms, user};
use crate::error::StorageError;
use crate::model::RefreshTokenRecord;
use crate::store::Store;

/// `ping` answers.
pub async fn ping(store: &dyn Store) {
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping failed: {e}"));
}

/// A created user can be read back by name and by id; unknown ones are
/// `None`.
pub async fn users_create_and_lookup(store: &dyn Store) {
    let u = user();
    store
        .create_user(&u)
        .await
        .unwrap_or_else(|e| panic!("create_user failed: {e}"));
    let by_name = store.user_by_name(&u.username).await.expect("user_by_name");
    assert_eq!(
        by_name.as_ref(),
        Some(&u),
        "user_by_name returns the record"
    );
    let by_id = store.user_by_id(&u.user_id).await.expect("user_by_id");
    assert_eq!(by_id.as_ref(), Some(&u), "user_by_id returns the record");
    assert_eq!(by_id.and_then(|u| u.last_seen), None, "new user never seen");

    let unknown = super::support::fresh_username();
    assert_eq!(
        store.user_by_name(&unknown).await.expect("user_by_name"),
        None,
        "unknown username must be None"
    );
    assert_eq!(
        store.user_by_id(&fresh_id()).await.expect("user_by_id"),
        None,
        "unknown user id must be None"
    );
}

/// A second user with a taken username is refused with `AlreadyExists`
/// and leaves nothing behind.
pub async fn username_conflict(store: &dyn Store) {
    let first = user();
    store.create_user(&first).await.expect("create first user");
    let mut second = user();
    second.username = first.username.clone();
    let res = store.create_user(&second).await;
    assert!(
        matches!(res, Err(StorageError::AlreadyExists)),
        "taken username must give AlreadyExists, got {res:?}"
    );
    assert_eq!(
        store
            .user_by_name(&first.username)
            .await
            .expect("user_by_name"),
        Some(first),
        "the name still belongs to the first user"
    );
    assert_eq!(
        store.user_by_id(&second.user_id).await.expect("user_by_id"),
        None,
        "the refused user must not exist by id"
    );
}

/// 16 concurrent registrations of one name: exactly one succeeds.
pub async fn concurrent_registration(store: Arc<dyn Store>) {
    concurrent_registration_across(&[store]).await;
}

/// 16 concurrent registrations of one name spread over `stores` (handles on
/// one database): exactly one succeeds, the rest get `AlreadyExists`.
pub async fn concurrent_registration_across(stores: &[Arc<dyn Store>]) {
    assert!(!stores.is_empty(), "need at least one store");
    const N: usize = 16;
    let name = super::support::fresh_username();
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let store = Arc::clone(&stores[i % stores.len()]);
        let barrier = Arc::clone(&barrier);
        let mut u = user();
        u.username = name.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (u.user_id.clone(), store.create_user(&u).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, res) = t.await.expect("registration task panicked");
        match res {
            Ok(()) => winners.push(id),
            Err(StorageError::AlreadyExists) => {}
            Err(e) => panic!("concurrent create_user: unexpected error {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent registration of a name may succeed"
    );
    let stored = stores[0]
        .user_by_name(&name)
        .await
        .expect("user_by_name")
        .expect("the winner must exist");
    assert_eq!(stored.user_id, winners[0], "the name belongs to the winner");
}

/// `set_last_seen` is stored and can move.
pub async fn last_seen(store: &dyn Store) {
    let u = user();
    store.create_user(&u).await.expect("create_user");
    store
        .set_last_seen(&u.user_id, 1_700_000_000_123)
        .await
        .unwrap_or_else(|e| panic!("set_last_seen failed: {e}"));
    let got = store.user_by_id(&u.user_id).await.expect("user_by_id");
    assert_eq!(
        got.and_then(|u| u.last_seen),
        Some(1_700_000_000_123),
        "last_seen stored"
    );
    store
        .set_last_seen(&u.user_id, 1_700_000_999_000)
        .await
        .expect("set_last_seen again");
    let got = store
        .user_by_name(&u.username)
        .await
        .expect("user_by_name")
        .expect("user exists");
    assert_eq!(got.last_seen, Some(1_700_000_999_000), "last_seen updated");
    assert_eq!(got.password_hash, u.password_hash, "other fields untouched");
}

/// Refresh tokens are taken exactly once; unknown ones are `None`; expired
/// ones are returned (the caller checks expiry).
pub async fn refresh_tokens(store: &dyn Store) {
    let t = RefreshTokenRecord {
        token_hash: format!("{:0>64}", fresh_id().replace('-', "")),
        user_id: fresh_id(),
        expires_at: now_ms() + 3_600_000,
    };
    store
        .put_refresh_token(&t)
        .await
        .unwrap_or_else(|e| panic!("put_refresh_token failed: {e}"));
    let taken = store.take_refresh_token(&t.token_hash).await.expect("take");
    assert_eq!(taken, Some(t.clone()), "first take returns the token");
    let again = store.take_refresh_token(&t.token_hash).await.expect("take");
    assert_eq!(again, None, "a token can be taken only once");
    let unknown = store.take_refresh_token(&fresh_id()).await.expect("take");
    assert_eq!(unknown, None, "unknown token must be None");

    let expired = RefreshTokenRecord {
        token_hash: fresh_id(),
        user_id: t.user_id.clone(),
        expires_at: now_ms() - 1_000,
    };
    store
        .put_refresh_token(&expired)
        .await
        .expect("put expired");
    let taken = store
        .take_refresh_token(&expired.token_hash)
        .await
        .expect("take");
    assert_eq!(taken, Some(expired), "expired tokens are returned too");
}

/// 8 concurrent takes of one token: exactly one gets it.
pub async fn concurrent_token_take(store: Arc<dyn Store>) {
    const N: usize = 8;
    let t = RefreshTokenRecord {
        token_hash: fresh_id(),
        user_id: fresh_id(),
        expires_at: now_ms() + 3_600_000,
    };
    store
        .put_refresh_token(&t)
        .await
        .expect("put_refresh_token");
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let hash = t.token_hash.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.take_refresh_token(&hash).await
        }));
    }
    let mut got = Vec::new();
    for task in tasks {
        let res = task.await.expect("take task panicked");
        if let Some(tok) = res.unwrap_or_else(|e| panic!("concurrent take failed: {e}")) {
            got.push(tok);
        }
    }
    assert_eq!(got, vec![t], "exactly one concurrent take gets the token");
}
