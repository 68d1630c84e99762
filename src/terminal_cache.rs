//! Terminals as last read, so a signed request on PostgreSQL need not read its terminal
//! again. The cache is never the last word: each such request's nonce is recorded only if
//! the terminal still has the version the request was checked against
//! (`Store::record_terminal_nonce`), so a suspension or a key rotation made on any instance
//! refuses the very next request. Bounded in entries and in age.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::directory::Terminal;
use crate::domain::ids::TerminalId;
use crate::domain::time::UnixMs;

/// Most terminals remembered; past it (all still fresh) lookups go to the database.
pub const DEFAULT_TERMINAL_CACHE_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub struct TerminalCache {
    capacity: usize,
    entries: Mutex<HashMap<TerminalId, (Terminal, UnixMs)>>,
}

impl TerminalCache {
    pub fn new(capacity: usize) -> TerminalCache {
        TerminalCache { capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// The terminal as read at most `max_age_ms` ago.
    pub fn get(&self, id: &TerminalId, now: UnixMs, max_age_ms: i64) -> Option<Terminal> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(id).filter(|(_, read_at)| now.0 - read_at.0 <= max_age_ms).map(|(terminal, _)| terminal.clone())
    }

    /// Remember `terminal` as read at `now`.
    pub fn put(&self, terminal: Terminal, now: UnixMs, max_age_ms: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&terminal.id) {
            entries.retain(|_, (_, read_at)| now.0 - read_at.0 <= max_age_ms);
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(terminal.id.clone(), (terminal, now));
    }

    /// Drop what is known of `id` (this instance just changed it).
    pub fn forget(&self, id: &TerminalId) {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
    }
}
