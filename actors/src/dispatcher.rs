//! The node-local dispatcher: hands events to this node's sessions of given users.
//!
//! Room actors and the presence actor never address sessions one by one;
//! they give the dispatcher a list of user ids and one pre-serialized event,
//! and the dispatcher pushes it into each local session's bounded queue.
//! (In a cluster, each node's dispatcher is the single destination of a
//! room's batched fan-out to that node.)

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::outbound::{Outbound, OutboundTx, Push};

/// A connected session as the dispatcher knows it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The session's id.
    pub session_id: Arc<str>,
    /// Its outbound queue.
    pub tx: OutboundTx,
}

/// Messages of the dispatcher.
#[derive(Debug)]
pub enum DispatcherMsg {
    /// A session of `user_id` connected on this node.
    Register {
        /// Owner of the session.
        user_id: Arc<str>,
        /// The session.
        entry: SessionEntry,
    },
    /// A session ended.
    Unregister {
        /// Owner of the session.
        user_id: Arc<str>,
        /// The session's id.
        session_id: Arc<str>,
    },
    /// Push `item` to every local session of every user in `users`, except
    /// the sessions of `except_user`.
    Deliver {
        /// Recipients.
        users: Arc<[Arc<str>]>,
        /// The event.
        item: Outbound,
        /// A user whose sessions are skipped (e.g. the typist).
        except_user: Option<Arc<str>>,
    },
    /// Ask every local session to close with a code (shutdown: 1012).
    CloseAll(u16),
    /// Number of local sessions and of distinct local users.
    Count(RpcReplyPort<(usize, usize)>),
}

/// The dispatcher actor.
pub struct Dispatcher;

/// Local sessions by user.
#[derive(Default)]
pub struct DispatcherState {
    by_user: HashMap<Arc<str>, Vec<SessionEntry>>,
    sessions: usize,
}

impl DispatcherState {
    fn deliver(&mut self, users: &[Arc<str>], item: &Outbound, except: Option<&Arc<str>>) {
        for user in users {
            if except.is_some_and(|e| e == user) {
                continue;
            }
            let Some(entries) = self.by_user.get_mut(user) else {
                continue;
            };
            let before = entries.len();
            // A session whose queue overflowed was told to close; drop it now
            // so it costs nothing more.
            entries.retain(|e| e.tx.push(item.clone()) == Push::Queued);
            self.sessions -= before - entries.len();
            if entries.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DispatcherState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatcherMsg::Register { user_id, entry } => {
                state.by_user.entry(user_id).or_default().push(entry);
                state.sessions += 1;
            }
            DispatcherMsg::Unregister {
                user_id,
                session_id,
            } => {
                if let Some(entries) = state.by_user.get_mut(&user_id) {
                    let before = entries.len();
                    entries.retain(|e| e.session_id != session_id);
                    state.sessions -= before - entries.len();
                    if entries.is_empty() {
                        state.by_user.remove(&user_id);
                    }
                }
            }
            DispatcherMsg::Deliver {
                users,
                item,
                except_user,
            } => {
                state.deliver(&users, &item, except_user.as_ref());
            }
            DispatcherMsg::CloseAll(code) => {
                for e in state.by_user.values().flatten() {
                    e.tx.close(code);
                }
            }
            DispatcherMsg::Count(reply) => {
                let _ = reply.send((state.sessions, state.by_user.len()));
            }
        }
        Ok(())
    }
}
