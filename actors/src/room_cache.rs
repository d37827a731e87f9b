//! A cache of local room actors for the two places that route many requests:
//! sessions and the inter-node inbox.

use std::collections::HashMap;

use ractor::{ActorRef, MessagingErr};

use crate::directory::DirectoryMsg;
use crate::error::ChatError;
use crate::room::RoomMsg;
use crate::system::ask;

/// Remembered room actors; forgets one that retired and looks it up again.
pub struct RoomCache {
    rooms: HashMap<String, ActorRef<RoomMsg>>,
    max: usize,
}

impl RoomCache {
    /// An empty cache that starts over beyond `max` rooms.
    pub fn new(max: usize) -> Self {
        RoomCache {
            rooms: HashMap::new(),
            max,
        }
    }

    /// Delivers `msg` to the room's local actor, started by the directory if
    /// needed; a retired actor hands the message back and it is routed again.
    pub async fn cast(
        &mut self,
        directory: &ActorRef<DirectoryMsg>,
        room_id: &str,
        mut msg: RoomMsg,
    ) -> Result<(), ChatError> {
        if !parley_protocol::ids::is_valid_id(room_id) {
            return Err(ChatError::NotFound);
        }
        for _ in 0..3 {
            let room = match self.rooms.get(room_id) {
                Some(r) => r.clone(),
                None => {
                    let id = room_id.to_string();
                    let r =
                        ask(directory, |reply| DirectoryMsg::Get { room_id: id, reply }).await??;
                    if self.rooms.len() >= self.max {
                        self.rooms.clear();
                    }
                    self.rooms.insert(room_id.to_string(), r.clone());
                    r
                }
            };
            match room.cast(msg) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(back)) => {
                    self.rooms.remove(room_id);
                    msg = back;
                }
                Err(_) => break,
            }
        }
        Err(ChatError::Unavailable("room unreachable, retry".into()))
    }
}
