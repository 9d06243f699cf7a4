//! The `Chat` service of the streaming examples: a room that relays each
//! member's lines to every other member (a bidirectional stream per member,
//! joined through a tokio broadcast channel).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchyard::{Status, Streaming};
use tokio::sync::broadcast;

/// The longest name a member may take (characters).
const MAX_NAME: usize = 32;

/// Events the room keeps for a member that reads slowly before it skips
/// them (and says how many it skipped).
const BACKLOG: usize = 256;

/// What a member of the room sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    /// The first event a member gets: who else is in the room.
    Welcome {
        /// The other members' names.
        others: Vec<String>,
    },
    /// Someone joined.
    Joined(String),
    /// Someone said something.
    Said {
        /// Who.
        from: String,
        /// What.
        text: String,
    },
    /// Someone left.
    Left(String),
    /// This member read too slowly and missed this many events.
    Missed(u64),
}

impl std::fmt::Display for RoomEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Welcome { others } if others.is_empty() => {
                f.write_str("* you are alone in the room")
            }
            Self::Welcome { others } => write!(f, "* in the room: {}", others.join(", ")),
            Self::Joined(name) => write!(f, "* {name} joined"),
            Self::Said { from, text } => write!(f, "{from}: {text}"),
            Self::Left(name) => write!(f, "* {name} left"),
            Self::Missed(count) => write!(f, "* (you missed {count} messages: reading too slowly)"),
        }
    }
}

/// A chat room.
#[switchyard::service]
pub trait Chat {
    /// Joins the room as `name`: each line of `lines` goes to every other
    /// member, and the stream returned carries theirs and who joins and
    /// leaves, until `lines` ends or the caller drops the stream.
    async fn join(
        &self,
        name: String,
        lines: Streaming<String>,
    ) -> Result<Streaming<RoomEvent>, Status>;
}

/// The one room the example serves.
#[derive(Debug, Clone)]
pub struct Room {
    /// Every event, with the id of the member it came from.
    events: broadcast::Sender<(u64, RoomEvent)>,
    /// Members by id, and the next id.
    members: Arc<Mutex<(BTreeMap<u64, String>, u64)>>,
}

impl Default for Room {
    fn default() -> Self {
        Self {
            events: broadcast::channel(BACKLOG).0,
            members: Arc::default(),
        }
    }
}

impl Room {
    /// An empty room.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name`: its id and the others' names.
    fn enter(&self, name: &str) -> (u64, Vec<String>) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let (by_id, next) = &mut *members;
        let id = *next;
        *next += 1;
        let others = by_id.values().cloned().collect();
        by_id.insert(id, name.to_owned());
        drop(members);
        self.say(id, RoomEvent::Joined(name.to_owned()));
        (id, others)
    }

    fn say(&self, from: u64, event: RoomEvent) {
        // No receivers: nobody else is in the room to hear it.
        let _ = self.events.send((from, event));
    }
}

impl Chat for Room {
    async fn join(
        &self,
        name: String,
        lines: Streaming<String>,
    ) -> Result<Streaming<RoomEvent>, Status> {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.contains(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "{name:?} cannot be a name in the room: take 1 to {MAX_NAME} printable characters"
            )));
        }
        let events = self.events.subscribe();
        let (id, others) = self.enter(&name);
        let member = Member {
            room: self.clone(),
            id,
            name,
            lines,
            events,
            welcome: Some(RoomEvent::Welcome { others }),
        };
        // Both directions in one stream: relaying this member's lines and
        // yielding the others' events. It ends when the member's lines end;
        // dropping it (the caller left) is leaving too.
        Ok(Streaming::new(futures_util::stream::unfold(
            member,
            |mut member| async move {
                if let Some(welcome) = member.welcome.take() {
                    return Some((welcome, member));
                }
                member.next_event().await.map(|event| (event, member))
            },
        )))
    }
}

/// One member's side of the room.
struct Member {
    room: Room,
    id: u64,
    name: String,
    lines: Streaming<String>,
    events: broadcast::Receiver<(u64, RoomEvent)>,
    welcome: Option<RoomEvent>,
}

impl Member {
    /// Relays this member's lines until another member's event comes:
    /// that event, or `None` once this member's lines end.
    async fn next_event(&mut self) -> Option<RoomEvent> {
        loop {
            tokio::select! {
                line = self.lines.next() => match line {
                    Some(Ok(text)) => self.room.say(self.id, RoomEvent::Said {
                        from: self.name.clone(),
                        text,
                    }),
                    // Ended, or failed (the caller went away).
                    None | Some(Err(_)) => return None,
                },
                event = self.events.recv() => match event {
                    Ok((from, _)) if from == self.id => {}
                    Ok((_, event)) => return Some(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some(RoomEvent::Missed(missed));
                    }
                    // The room holds a sender as long as this member lives.
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.room
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(&self.id);
        self.room.say(self.id, RoomEvent::Left(self.name.clone()));
    }
}
