//! Fair queuing for the memory store, the same structure as `queue_lib.lua`: one waiting line
//! per client, a ring of the clients with waiting work that may start another job (each at most
//! once), and the clients held out of the ring at their concurrency cap until one of their
//! active jobs ends. A claim takes the first job of the ring's first client and passes the turn
//! to the next client: round-robin across clients, O(1) per job.

use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Default)]
pub(crate) struct FairQueue {
    lines: HashMap<String, VecDeque<String>>,
    ready: VecDeque<String>,
    held: HashSet<String>,
    active: HashMap<String, u32>,
    queued: usize,
}

/// The client whose turn it is in one claim, and how many more jobs it may start.
#[derive(Debug)]
pub(crate) struct Turn {
    pub client: String,
    pub room: u32,
}

impl FairQueue {
    /// Every waiting job, held clients' included.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Puts a job in its client's line: at the end, or at the front for a job given back. True
    /// if this made work ready where none was.
    pub fn enqueue(&mut self, id: String, client: &str, front: bool) -> bool {
        let line = self.lines.entry(client.to_owned()).or_default();
        if front {
            line.push_front(id);
        } else {
            line.push_back(id);
        }
        self.queued += 1;
        if line.len() == 1 && !self.held.contains(client) {
            if front {
                self.ready.push_front(client.to_owned());
            } else {
                self.ready.push_back(client.to_owned());
            }
            return self.ready.len() == 1;
        }
        false
    }

    /// Takes a waiting job out of its client's line (cancellation). True if it was there.
    pub fn remove(&mut self, id: &str, client: &str) -> bool {
        let Some(line) = self.lines.get_mut(client) else {
            return false;
        };
        let Some(at) = line.iter().position(|w| w == id) else {
            return false;
        };
        line.remove(at);
        self.queued -= 1;
        if line.is_empty() {
            self.lines.remove(client);
            if let Some(at) = self.ready.iter().position(|c| c == client) {
                self.ready.remove(at);
            }
        }
        true
    }

    /// One of `client`'s active jobs ended; a client held at its cap takes its turn again. True
    /// if that made work ready.
    pub fn active_ended(&mut self, client: &str) -> bool {
        if let Some(count) = self.active.get_mut(client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.active.remove(client);
            }
        }
        if self.held.remove(client) && self.line_len(client) > 0 {
            self.ready.push_back(client.to_owned());
            return self.ready.len() == 1;
        }
        false
    }

    /// The next client that may start a job (`cap` 0: no cap), holding those at their cap on
    /// the way; `started` counts what this claim already started per client. None if no
    /// client is ready.
    pub fn next_turn(&mut self, cap: u32, started: &HashMap<String, u32>) -> Option<Turn> {
        while let Some(client) = self.ready.pop_front() {
            let room = if cap == 0 {
                u32::MAX
            } else {
                let busy = self.active.get(&client).copied().unwrap_or(0)
                    + started.get(&client).copied().unwrap_or(0);
                cap.saturating_sub(busy)
            };
            if room > 0 {
                return Some(Turn { client, room });
            }
            self.held.insert(client);
        }
        None
    }

    /// The first job of a client's line.
    pub fn first(&self, client: &str) -> Option<&String> {
        self.lines.get(client).and_then(|line| line.front())
    }

    /// The first job of the line whose turn is next (for the budget-wait wake-up).
    pub fn head(&self) -> Option<&String> {
        self.ready.front().and_then(|client| self.first(client))
    }

    /// Takes the first job of a client's line.
    pub fn pop(&mut self, client: &str) -> Option<String> {
        let line = self.lines.get_mut(client)?;
        let id = line.pop_front()?;
        self.queued -= 1;
        if line.is_empty() {
            self.lines.remove(client);
        }
        Some(id)
    }

    fn line_len(&self, client: &str) -> usize {
        self.lines.get(client).map_or(0, VecDeque::len)
    }

    /// After a client's job started (or failed) in a claim: passes the turn on, and returns the
    /// turn if the client keeps it (nobody else is ready and it may start more).
    pub fn pass(&mut self, turn: Turn) -> Option<Turn> {
        if self.line_len(&turn.client) == 0 {
            return None;
        }
        if turn.room == 0 {
            self.held.insert(turn.client);
            return None;
        }
        if self.ready.is_empty() {
            return Some(turn);
        }
        self.ready.push_back(turn.client);
        None
    }

    /// The end of a claim: the client whose turn it was keeps its place, first in line.
    pub fn keep_place(&mut self, turn: Option<Turn>) {
        if let Some(turn) = turn
            && self.line_len(&turn.client) > 0
        {
            self.ready.push_front(turn.client);
        }
    }

    /// Counts the jobs one claim started per client.
    pub fn started(&mut self, started: HashMap<String, u32>) {
        for (client, count) in started {
            *self.active.entry(client).or_default() += count;
        }
    }
}
