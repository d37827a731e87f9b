//! Creates a scenario's world through the HTTP API: users (register + log
//! in), group rooms with their members, direct rooms; and reads room history
//! back for the checker.
//!
//! The node must run with cheap password hashing and rate limits off for
//! this to be quick (see the crate's README).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use parley_protocol::http::HISTORY_MAX_LIMIT;

use crate::api::{Api, ApiError};
use crate::checker::HistoryEntry;
use crate::cli::NODE_FLAGS;
use crate::plan::{Plan, RoomKind};
use crate::progress::Progress;

/// Password of every load-test user.
pub const PASSWORD: &str = "loadtest-password";
/// Most members besides the creator in one `POST /rooms`.
const MEMBERS_PER_CREATE: usize = 999;

/// Why setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A call failed.
    #[error("{step}: {source}{hint}", hint = rate_limit_hint(source))]
    Api {
        /// What was being done.
        step: &'static str,
        /// The failure.
        source: ApiError,
    },
    /// No node to talk to.
    #[error("no nodes given")]
    NoNodes,
}

/// For an answer of the node's rate limits, how to run the node for load
/// tests; otherwise nothing.
fn rate_limit_hint(e: &ApiError) -> String {
    if e.code() == Some("rate_limited") {
        format!(" (the node limits this rate; run it for load tests with {NODE_FLAGS})")
    } else {
        String::new()
    }
}

fn at(step: &'static str) -> impl Fn(ApiError) -> SetupError {
    move |source| SetupError::Api { step, source }
}

/// The created world: names, tokens and room ids, by plan index.
#[derive(Debug, Clone)]
pub struct World {
    /// Usernames by user index.
    pub usernames: Vec<String>,
    /// Access tokens by user index.
    pub tokens: Vec<Arc<str>>,
    /// Room ids by room index.
    pub room_ids: Vec<Arc<str>>,
    /// Room heads right after creation (0 for fresh rooms).
    pub room_heads: Vec<u64>,
}

/// A short tag that makes this run's usernames unique.
pub fn run_tag() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut n = ms % 36u64.pow(7);
    let mut s = Vec::new();
    for _ in 0..7 {
        let d = (n % 36) as u8;
        s.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// Creates the plan's users and rooms, spreading calls over the nodes.
pub async fn build(
    apis: &[Api],
    plan: &Plan,
    tag: &str,
    concurrency: usize,
    progress: &Progress,
) -> Result<World, SetupError> {
    if apis.is_empty() {
        return Err(SetupError::NoNodes);
    }
    let conc = concurrency.max(1);
    let usernames: Vec<String> = (0..plan.users).map(|i| format!("lt{tag}u{i}")).collect();
    let api_of = |i: usize| &apis[i % apis.len()];

    let bar = progress.bar("register", plan.users as u64);
    stream::iter(usernames.iter().enumerate())
        .map(|(i, name)| {
            let bar = &bar;
            async move {
                match api_of(i).register(name, PASSWORD).await {
                    Ok(_) => {}
                    // Taken: an earlier run with the same tag; log in anyway.
                    Err(e) if e.code() == Some("conflict") => {}
                    Err(e) => return Err(at("register")(e)),
                }
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(conc)
        .try_collect::<()>()
        .await?;
    bar.finish();

    let bar = progress.bar("login", plan.users as u64);
    let mut tokens: Vec<(usize, Arc<str>)> = stream::iter(usernames.iter().enumerate())
        .map(|(i, name)| {
            let bar = &bar;
            async move {
                let t = api_of(i).login(name, PASSWORD).await.map_err(at("login"))?;
                bar.inc(1);
                Ok::<_, SetupError>((i, Arc::<str>::from(t.access_token)))
            }
        })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    tokens.sort_by_key(|(i, _)| *i);
    let tokens: Vec<Arc<str>> = tokens.into_iter().map(|(_, t)| t).collect();
    bar.finish();

    let bar = progress.bar("rooms", plan.rooms.len() as u64);
    let mut rooms: Vec<(usize, Arc<str>, u64)> = stream::iter(plan.rooms.iter().enumerate())
        .map(|(ri, room)| {
            let (bar, usernames, tokens) = (&bar, &usernames, &tokens);
            async move {
                let Some(&owner) = room.members.first() else {
                    return Ok((ri, Arc::<str>::from(""), 0));
                };
                let api = api_of(ri);
                let token = &tokens[owner];
                let info = match room.kind {
                    RoomKind::Direct => {
                        let other = room.members.get(1).copied().unwrap_or(owner);
                        api.direct_room(token, &usernames[other])
                            .await
                            .map_err(at("create direct room"))?
                    }
                    RoomKind::Group => {
                        let rest: Vec<String> = room.members[1..]
                            .iter()
                            .map(|&u| usernames[u].clone())
                            .collect();
                        let first: Vec<String> =
                            rest.iter().take(MEMBERS_PER_CREATE).cloned().collect();
                        let info = api
                            .create_room(token, &format!("lt{tag}r{ri}"), first)
                            .await
                            .map_err(at("create room"))?;
                        for name in rest.iter().skip(MEMBERS_PER_CREATE) {
                            api.add_member(token, &info.room_id, name)
                                .await
                                .map_err(at("add member"))?;
                        }
                        info
                    }
                };
                bar.inc(1);
                Ok::<_, SetupError>((ri, Arc::<str>::from(info.room_id), info.last_seq))
            }
        })
        .buffer_unordered(conc.min(16))
        .try_collect()
        .await?;
    rooms.sort_by_key(|(i, _, _)| *i);
    bar.finish();
    Ok(World {
        usernames,
        tokens,
        room_ids: rooms.iter().map(|(_, id, _)| id.clone()).collect(),
        room_heads: rooms.iter().map(|(_, _, h)| *h).collect(),
    })
}

/// Reads every room's full history (paging forward with `after_seq`), using
/// a member's token; `None` for a room whose history could not be read.
pub async fn read_history(
    apis: &[Api],
    plan: &Plan,
    world: &World,
    concurrency: usize,
) -> Vec<Option<Vec<HistoryEntry>>> {
    if apis.is_empty() {
        return vec![None; plan.rooms.len()];
    }
    let mut out: Vec<(usize, Option<Vec<HistoryEntry>>)> =
        stream::iter(plan.rooms.iter().enumerate())
            .map(|(ri, room)| async move {
                let (Some(&u), Some(room_id)) = (room.members.first(), world.room_ids.get(ri))
                else {
                    return (ri, None);
                };
                let Some(token) = world.tokens.get(u) else {
                    return (ri, None);
                };
                // Try each node once in turn: a killed node may not be back.
                for k in 0..apis.len() {
                    let api = &apis[(ri + k) % apis.len()];
                    if let Ok(h) = history_of(api, token, room_id).await {
                        return (ri, Some(h));
                    }
                }
                (ri, None)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, h)| h).collect()
}

async fn history_of(api: &Api, token: &str, room_id: &str) -> Result<Vec<HistoryEntry>, ApiError> {
    let mut out = Vec::new();
    let mut after = 0u64;
    // Bounded: at most 10 million messages per room.
    for _ in 0..50_000 {
        let page = api
            .messages_after(token, room_id, after, HISTORY_MAX_LIMIT)
            .await?;
        let n = page.messages.len();
        for m in page.messages {
            after = after.max(m.seq);
            out.push(HistoryEntry {
                seq: m.seq,
                message_id: m.message_id,
                client_msg_id: m.client_msg_id,
            });
        }
        if !page.has_more || n == 0 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_valid_username_parts() {
        let t = run_tag();
        assert_eq!(t.len(), 7);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let name = format!("lt{t}u123456");
        assert!(parley_protocol::validate::username(&name).is_ok());
    }
}
