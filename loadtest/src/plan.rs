//! Scenario layouts: which users exist, which rooms they share, which
//! sessions connect, and who sends where at what rate. Pure data, no I/O.

use std::time::Duration;

use serde::Serialize;

/// The scenarios the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Connection storm: how fast N sessions connect.
    Connect,
    /// Hold N sessions open; node memory per session.
    Idle,
    /// R rooms x M members, S senders per room at r msgs/s each.
    Fanout,
    /// Many one-to-one pairs, both sides sending.
    Dm,
    /// Group rooms and direct rooms with typing, read receipts and reconnects.
    Mixed,
    /// Fanout while a node is killed (and optionally restarted).
    Chaos,
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Dm => "dm",
            Scenario::Mixed => "mixed",
            Scenario::Chaos => "chaos",
        }
    }

    /// Whether the scenario sends messages.
    pub fn sends(self) -> bool {
        !matches!(self, Scenario::Connect | Scenario::Idle)
    }
}

/// Kind of room to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// `POST /rooms` by the first member.
    Group,
    /// `POST /rooms/direct` between the two members.
    Direct,
}

/// One room to create.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomPlan {
    /// Group or direct.
    pub kind: RoomKind,
    /// Member user indices; the first creates the room.
    pub members: Vec<usize>,
}

/// One session to open.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// User index.
    pub user: usize,
    /// Rooms the user is a member of.
    pub rooms: Vec<usize>,
    /// Rooms this session sends to, in turn.
    pub send_rooms: Vec<usize>,
    /// Messages per second.
    pub rate: f64,
    /// Send `typing` before each message.
    pub typing: bool,
    /// Send `read` watermarks.
    pub read_receipts: bool,
    /// Drop the connection this long after the run starts, then reconnect and sync.
    pub drop_after: Option<Duration>,
}

impl SessionPlan {
    fn receiver(user: usize, rooms: Vec<usize>) -> Self {
        SessionPlan {
            user,
            rooms,
            send_rooms: Vec::new(),
            rate: 0.0,
            typing: false,
            read_receipts: false,
            drop_after: None,
        }
    }
}

/// A scenario's world and sessions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Number of users.
    pub users: usize,
    /// Rooms.
    pub rooms: Vec<RoomPlan>,
    /// Sessions.
    pub sessions: Vec<SessionPlan>,
}

/// The knobs a plan is built from.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Sessions (connect, idle, dm, and the pairs of mixed).
    pub sessions: usize,
    /// Users for connect/idle (sessions share users round-robin); default: one per session.
    pub users: Option<usize>,
    /// Rooms (fanout, mixed, chaos).
    pub rooms: usize,
    /// Members per room.
    pub members: usize,
    /// Senders per room.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// Share of sessions that drop and reconnect once (mixed).
    pub reconnect_fraction: f64,
    /// Warm-up plus measured duration, for spreading planned drops.
    pub run_length: Duration,
}

/// Builds the plan of a scenario.
pub fn build(scenario: Scenario, shape: &Shape) -> Plan {
    match scenario {
        Scenario::Connect | Scenario::Idle => {
            let users = shape
                .users
                .unwrap_or(shape.sessions)
                .clamp(1, shape.sessions.max(1));
            Plan {
                users,
                rooms: Vec::new(),
                sessions: (0..shape.sessions)
                    .map(|i| SessionPlan::receiver(i % users, Vec::new()))
                    .collect(),
            }
        }
        Scenario::Fanout | Scenario::Chaos => groups(shape, false),
        Scenario::Mixed => groups(shape, true),
        Scenario::Dm => {
            let pairs = (shape.sessions / 2).max(1);
            let mut plan = Plan {
                users: pairs * 2,
                ..Plan::default()
            };
            for p in 0..pairs {
                plan.rooms.push(RoomPlan {
                    kind: RoomKind::Direct,
                    members: vec![2 * p, 2 * p + 1],
                });
                for u in [2 * p, 2 * p + 1] {
                    let mut s = SessionPlan::receiver(u, vec![p]);
                    s.send_rooms = vec![p];
                    s.rate = shape.rate;
                    plan.sessions.push(s);
                }
            }
            plan
        }
    }
}

/// R rooms of M members, S senders each; `mixed` adds a direct room per
/// pair of users, typing, read receipts and planned reconnects.
fn groups(shape: &Shape, mixed: bool) -> Plan {
    let m = shape.members.max(1);
    let r = shape.rooms.max(1);
    let senders = shape.senders.min(m);
    let users = r * m;
    let mut plan = Plan {
        users,
        ..Plan::default()
    };
    for room in 0..r {
        plan.rooms.push(RoomPlan {
            kind: RoomKind::Group,
            members: (room * m..(room + 1) * m).collect(),
        });
    }
    // Direct room of each user pair (mixed only).
    let dm_base = plan.rooms.len();
    if mixed {
        for p in 0..users / 2 {
            plan.rooms.push(RoomPlan {
                kind: RoomKind::Direct,
                members: vec![2 * p, 2 * p + 1],
            });
        }
    }
    let mut drops = 0usize;
    for u in 0..users {
        let group = u / m;
        let mut rooms = vec![group];
        let dm = (mixed && u / 2 < users / 2).then_some(dm_base + u / 2);
        rooms.extend(dm);
        let mut s = SessionPlan::receiver(u, rooms);
        if u % m < senders {
            s.send_rooms = vec![group];
            s.send_rooms.extend(dm);
            s.rate = shape.rate;
        }
        if mixed {
            s.typing = !s.send_rooms.is_empty();
            s.read_receipts = true;
            // The asked share of sessions drops once (as evenly spread over
            // the sessions as whole numbers allow), each at its own moment
            // within 10%..80% of the run.
            let f = shape.reconnect_fraction.clamp(0.0, 1.0);
            let share = |k: usize| (k as f64 * f + 0.5).floor() as usize;
            if share(u + 1) > share(u) {
                let at = 0.1 + 0.7 * ((drops as f64 * 0.618_034) % 1.0);
                s.drop_after = Some(shape.run_length.mul_f64(at));
                drops += 1;
            }
        }
        plan.sessions.push(s);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            sessions: 10,
            users: None,
            rooms: 3,
            members: 4,
            senders: 2,
            rate: 5.0,
            reconnect_fraction: 0.25,
            run_length: Duration::from_secs(10),
        }
    }

    #[test]
    fn fanout_layout() {
        let p = build(Scenario::Fanout, &shape());
        assert_eq!(p.users, 12);
        assert_eq!(p.rooms.len(), 3);
        assert_eq!(p.sessions.len(), 12);
        assert_eq!(p.rooms[1].members, vec![4, 5, 6, 7]);
        let senders: Vec<_> = p.sessions.iter().filter(|s| s.rate > 0.0).collect();
        assert_eq!(senders.len(), 6);
        assert!(senders.iter().all(|s| s.send_rooms == s.rooms));
    }

    #[test]
    fn idle_shares_users() {
        let mut sh = shape();
        sh.users = Some(3);
        let p = build(Scenario::Idle, &sh);
        assert_eq!(p.users, 3);
        assert_eq!(p.sessions.len(), 10);
        assert_eq!(p.sessions[4].user, 1);
        assert!(p.rooms.is_empty());
    }

    #[test]
    fn dm_pairs() {
        let p = build(Scenario::Dm, &shape());
        assert_eq!(p.rooms.len(), 5);
        assert!(p.rooms.iter().all(|r| r.kind == RoomKind::Direct));
        assert_eq!(p.sessions.len(), 10);
        assert!(p.sessions.iter().all(|s| s.rate == 5.0));
    }

    #[test]
    fn mixed_adds_dms_typing_and_drops() {
        let p = build(Scenario::Mixed, &shape());
        assert_eq!(p.rooms.len(), 3 + 6);
        assert!(p.sessions.iter().all(|s| s.rooms.len() == 2));
        assert!(p.sessions.iter().any(|s| s.drop_after.is_some()));
        assert!(p.sessions.iter().filter(|s| s.rate > 0.0).all(|s| s.typing));
        for s in &p.sessions {
            for r in &s.rooms {
                assert!(p.rooms[*r].members.contains(&s.user));
            }
        }
    }

    /// The share of sessions that drop is the one asked for (it was rounded
    /// to one in every k: 0.6 of 100 dropped 50, 0.9 dropped all 100).
    #[test]
    fn the_asked_share_of_sessions_drops() {
        for (members, fraction, want) in [
            (50, 0.6, 60),
            (50, 0.9, 90),
            (40, 0.3, 24),
            (50, 0.0, 0),
            (50, 1.0, 100),
        ] {
            let mut sh = shape();
            sh.rooms = 2;
            sh.members = members;
            sh.reconnect_fraction = fraction;
            let p = build(Scenario::Mixed, &sh);
            let drops = p.sessions.iter().filter(|s| s.drop_after.is_some()).count();
            assert_eq!(drops, want, "{fraction} of {}", p.sessions.len());
        }
    }
}
