//! The agent's memory of every pulse it has touched: an append-only text file, one line per
//! step, fsync'd before the next step happens. It is what makes a pulse apply once across
//! crashes and reboots.
//!
//! ```text
//! applying <id> <credits> <source> <pulse time> <at>
//! applied <id> <at>
//! failed <id> <at> <reason>            the output said it did nothing: a redelivery retries
//! resolved <id> applied|not-applied <at>   the owner's verdict on an interrupted pulse
//! ```
//!
//! A pulse left at `applying` was interrupted while its output ran: the coins may or may
//! not have reached the game. It is never applied again automatically and never acked; the
//! owner looks at the cabinet and says which (`coinpulse-cabinet resolve`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use coinpulse_wire::PulseMessage;
use serde::{Deserialize, Serialize};

/// Lines beyond which the file is rewritten at open, keeping what still matters.
const COMPACT_AFTER_LINES: usize = 20_000;
/// Applied pulses are remembered at least this long after a compaction (a pulse older than
/// the agent's age limit is refused anyway; this is far beyond any sensible limit).
const KEEP_APPLIED_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Recorded before the output ran; still there means it was interrupted.
    Applying,
    Applied,
    /// The output failed before doing anything; a redelivery may apply it.
    Failed,
    /// The owner checked an interrupted pulse and found it was not applied.
    NotApplied,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub state: State,
    pub credits: i64,
    pub source: String,
    pub pulse_time: String,
    /// When the entry last changed.
    pub at: DateTime<Utc>,
    /// Why it failed, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Entry {
    /// The lines that bring an empty journal to this entry (what compaction writes).
    fn lines(&self) -> Vec<Line> {
        let (id, at) = (self.id.clone(), self.at);
        let applying = Line::Applying {
            id: id.clone(),
            credits: self.credits,
            source: self.source.clone(),
            pulse_time: self.pulse_time.clone(),
            at,
        };
        let end = match self.state {
            State::Applying => None,
            State::Applied => Some(Line::Applied { id, at }),
            State::Failed => Some(Line::Failed {
                id,
                at,
                reason: self.reason.clone().unwrap_or_default(),
            }),
            State::NotApplied => Some(Line::Resolved {
                id,
                applied: false,
                at,
            }),
        };
        std::iter::once(applying).chain(end).collect()
    }
}

/// What a journal line can be turned into; kept apart from the file for the unit tests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Applying {
        id: String,
        credits: i64,
        source: String,
        pulse_time: String,
        at: DateTime<Utc>,
    },
    Applied {
        id: String,
        at: DateTime<Utc>,
    },
    Failed {
        id: String,
        at: DateTime<Utc>,
        reason: String,
    },
    Resolved {
        id: String,
        applied: bool,
        at: DateTime<Utc>,
    },
}

impl Line {
    fn render(&self) -> String {
        let t = |at: &DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match self {
            Line::Applying {
                id,
                credits,
                source,
                pulse_time,
                at,
            } => format!("applying {id} {credits} {source} {pulse_time} {}", t(at)),
            Line::Applied { id, at } => format!("applied {id} {}", t(at)),
            Line::Failed { id, at, reason } => {
                // One line per entry, whatever the reason says.
                let reason = reason.replace(['\n', '\r'], " ");
                format!("failed {id} {} {reason}", t(at))
            }
            Line::Resolved { id, applied, at } => {
                let verdict = if *applied { "applied" } else { "not-applied" };
                format!("resolved {id} {verdict} {}", t(at))
            }
        }
    }

    fn parse(text: &str) -> Option<Line> {
        let time = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc());
        let mut words = text.split(' ');
        let first = words.next()?;
        let line = match first {
            "applying" => Line::Applying {
                id: words.next()?.to_owned(),
                credits: words.next()?.parse().ok()?,
                source: words.next()?.to_owned(),
                pulse_time: words.next()?.to_owned(),
                at: time(words.next()?)?,
            },
            "applied" => Line::Applied {
                id: words.next()?.to_owned(),
                at: time(words.next()?)?,
            },
            "failed" => Line::Failed {
                id: words.next()?.to_owned(),
                at: time(words.next()?)?,
                reason: words.collect::<Vec<_>>().join(" "),
            },
            "resolved" => Line::Resolved {
                id: words.next()?.to_owned(),
                applied: match words.next()? {
                    "applied" => true,
                    "not-applied" => false,
                    _ => return None,
                },
                at: time(words.next()?)?,
            },
            // The simulator's older files: one credited pulse id per line.
            id if !id.is_empty() && words.next().is_none() => Line::Applied {
                id: id.to_owned(),
                at: DateTime::UNIX_EPOCH,
            },
            _ => return None,
        };
        Some(line)
    }
}

/// The entries by pulse id, plus the open file (none: kept in memory only).
pub struct Journal {
    entries: HashMap<String, Entry>,
    /// Pulse ids in the order they were first seen, for "last applied".
    order: Vec<String>,
    file: Option<File>,
    path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("pulse journal {path}: {source}")]
pub struct JournalError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Journal {
    pub fn in_memory() -> Self {
        Self {
            entries: HashMap::new(),
            order: Vec::new(),
            file: None,
            path: None,
        }
    }

    /// Reads the file (creating it if need be) and keeps it open for appending.
    /// `compact`: whether old applied pulses may be forgotten once the file is large;
    /// only safe when pulses that old are refused anyway (an age limit is set).
    pub fn open(path: &Path, compact: bool) -> Result<Self, JournalError> {
        let err = |source| JournalError {
            path: path.display().to_string(),
            source,
        };
        let mut journal = Self::read(path).map_err(err)?;
        if compact && journal.lines_read > COMPACT_AFTER_LINES {
            journal.inner.compact(path).map_err(err)?;
        }
        let mut inner = journal.inner;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        if journal.torn {
            // End the torn line, so that the next record starts on a line of its own.
            file.write_all(b"\n")
                .and_then(|_| file.sync_data())
                .map_err(err)?;
        }
        inner.file = Some(file);
        inner.path = Some(path.to_owned());
        Ok(inner)
    }

    /// Reads the file without opening it for writing (for `status` while the agent runs).
    pub fn load(path: &Path) -> Result<Self, JournalError> {
        Self::read(path)
            .map(|r| Self {
                path: Some(path.to_owned()),
                ..r.inner
            })
            .map_err(|source| JournalError {
                path: path.display().to_string(),
                source,
            })
    }

    fn read(path: &Path) -> std::io::Result<ReadJournal> {
        let mut inner = Self::in_memory();
        let mut lines_read = 0;
        let mut torn = false;
        match File::open(path) {
            Ok(f) => {
                let mut reader = BufReader::new(f);
                let mut raw = String::new();
                loop {
                    raw.clear();
                    if reader.read_line(&mut raw)? == 0 {
                        break;
                    }
                    torn = !raw.ends_with('\n');
                    let line = raw.trim_end_matches(['\n', '\r']);
                    lines_read += 1;
                    match Line::parse(line.trim_end()) {
                        Some(l) => inner.apply(l),
                        // A torn last line (power cut mid-write) names no finished step.
                        None if !line.trim().is_empty() => {
                            tracing::warn!(line = %line, "unreadable pulse journal line skipped")
                        }
                        None => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(ReadJournal {
            inner,
            lines_read,
            torn,
        })
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Applying {
                id,
                credits,
                source,
                pulse_time,
                at,
            } => {
                if !self.entries.contains_key(&id) {
                    self.order.push(id.clone());
                }
                self.entries.insert(
                    id.clone(),
                    Entry {
                        id,
                        state: State::Applying,
                        credits,
                        source,
                        pulse_time,
                        at,
                        reason: None,
                    },
                );
            }
            Line::Applied { id, at } => {
                let e = self.entry(&id);
                e.state = State::Applied;
                e.at = at;
                e.reason = None;
            }
            Line::Failed { id, at, reason } => {
                let e = self.entry(&id);
                e.state = State::Failed;
                e.at = at;
                e.reason = Some(reason);
            }
            Line::Resolved { id, applied, at } => {
                let e = self.entry(&id);
                e.state = if applied {
                    State::Applied
                } else {
                    State::NotApplied
                };
                e.at = at;
            }
        }
    }

    fn entry(&mut self, id: &str) -> &mut Entry {
        if !self.entries.contains_key(id) {
            self.order.push(id.to_owned());
        }
        self.entries.entry(id.to_owned()).or_insert_with(|| Entry {
            id: id.to_owned(),
            state: State::Applied,
            credits: 0,
            source: String::new(),
            pulse_time: String::new(),
            at: DateTime::UNIX_EPOCH,
            reason: None,
        })
    }

    /// Writes and fsyncs one line, then updates the entries: when this returns Ok, the step
    /// survives a power cut.
    fn record(&mut self, line: Line) -> std::io::Result<()> {
        if let Some(f) = &mut self.file {
            // One write per line: a cut leaves at most this line torn.
            let mut text = line.render();
            text.push('\n');
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        self.apply(line);
        Ok(())
    }

    pub fn state(&self, id: &str) -> Option<State> {
        self.entries.get(id).map(|e| e.state)
    }

    pub fn applying(&mut self, p: &PulseMessage) -> std::io::Result<()> {
        self.record(Line::Applying {
            id: p.id.clone(),
            credits: p.credits,
            source: p.source.as_str().to_owned(),
            pulse_time: p.timestamp.clone(),
            at: Utc::now(),
        })
    }

    pub fn applied(&mut self, id: &str) -> std::io::Result<()> {
        self.record(Line::Applied {
            id: id.to_owned(),
            at: Utc::now(),
        })
    }

    pub fn failed(&mut self, id: &str, reason: &str) -> std::io::Result<()> {
        self.record(Line::Failed {
            id: id.to_owned(),
            at: Utc::now(),
            reason: reason.to_owned(),
        })
    }

    /// The owner's verdict on an interrupted pulse. Only an interrupted one can be resolved.
    pub fn resolve(&mut self, id: &str, applied: bool) -> Result<(), ResolveError> {
        match self.state(id) {
            Some(State::Applying) => self
                .record(Line::Resolved {
                    id: id.to_owned(),
                    applied,
                    at: Utc::now(),
                })
                .map_err(ResolveError::Io),
            Some(other) => Err(ResolveError::NotInterrupted(id.to_owned(), other)),
            None => Err(ResolveError::Unknown(id.to_owned())),
        }
    }

    /// Pulses interrupted while their output ran, oldest first.
    pub fn interrupted(&self) -> Vec<&Entry> {
        self.in_order()
            .filter(|e| e.state == State::Applying)
            .collect()
    }

    /// The last `n` applied pulses, newest first.
    pub fn last_applied(&self, n: usize) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self
            .in_order()
            .filter(|e| e.state == State::Applied && e.at > DateTime::UNIX_EPOCH)
            .collect();
        v.reverse();
        v.truncate(n);
        v
    }

    fn in_order(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().filter_map(|id| self.entries.get(id))
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Rewrites the file with one line per entry still worth keeping: every pulse not
    /// cleanly applied, and applied ones from the last days (older ones would be refused
    /// as too old before the journal is asked). Written beside it, then renamed over it.
    fn compact(&mut self, path: &Path) -> std::io::Result<()> {
        let horizon = Utc::now() - chrono::Duration::days(KEEP_APPLIED_DAYS);
        self.order.retain(|id| {
            let e = &self.entries[id];
            e.state != State::Applied || e.at >= horizon
        });
        let keep: std::collections::HashSet<&String> = self.order.iter().collect();
        self.entries.retain(|id, _| keep.contains(id));
        let tmp = path.with_extension("compacting");
        {
            let mut f = File::create(&tmp)?;
            for id in &self.order {
                for line in self.entries[id].lines() {
                    writeln!(f, "{}", line.render())?;
                }
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename itself must reach the disk before the old file is forgotten.
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        tracing::info!(kept = self.order.len(), "pulse journal compacted");
        Ok(())
    }
}

struct ReadJournal {
    inner: Journal,
    lines_read: usize,
    /// The last line has no end: a write cut short.
    torn: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no pulse {0} in the journal")]
    Unknown(String),
    #[error("pulse {0} was not interrupted (it is {1:?}); nothing to resolve")]
    NotInterrupted(String, State),
    #[error("pulse {0} is being applied right now; wait for it to finish")]
    Busy(String),
    #[error("could not write the journal: {0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use coinpulse_wire::PulseSource;

    fn pulse(id: &str) -> PulseMessage {
        PulseMessage {
            id: id.into(),
            machine_id: "cab-1".into(),
            credits: 2,
            timestamp: "2026-12-01T10:00:00Z".into(),
            source: PulseSource::Stripe,
        }
    }

    #[test]
    fn every_step_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulses.journal");
        let mut j = Journal::open(&path, true).unwrap();
        j.applying(&pulse("p1")).unwrap();
        j.applied("p1").unwrap();
        j.applying(&pulse("p2")).unwrap();
        j.applying(&pulse("p3")).unwrap();
        j.failed("p3", "exit status 1\nsecond line").unwrap();
        drop(j);
        let mut j = Journal::open(&path, true).unwrap();
        assert_eq!(j.state("p1"), Some(State::Applied));
        assert_eq!(j.state("p2"), Some(State::Applying), "interrupted");
        assert_eq!(j.state("p3"), Some(State::Failed));
        assert_eq!(j.state("p4"), None);
        assert_eq!(j.interrupted().len(), 1);
        assert_eq!(j.last_applied(5)[0].id, "p1");
        assert_eq!(
            j.entries["p3"].reason.as_deref(),
            Some("exit status 1 second line")
        );

        assert!(matches!(
            j.resolve("p1", true),
            Err(ResolveError::NotInterrupted(..))
        ));
        assert!(matches!(
            j.resolve("nope", true),
            Err(ResolveError::Unknown(_))
        ));
        j.resolve("p2", false).unwrap();
        drop(j);
        let j = Journal::open(&path, true).unwrap();
        assert_eq!(j.state("p2"), Some(State::NotApplied));
        assert!(j.interrupted().is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_older_files_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulses.journal");
        std::fs::write(
            &path,
            "old-pulse-id\napplying p1 1 stripe 2026-12-01T10:00:00Z 2026-12-01T10:00:01.000Z\napplied p1 2026-12-01T10:00:01.1",
        )
        .unwrap();
        let j = Journal::open(&path, true).unwrap();
        assert_eq!(j.state("old-pulse-id"), Some(State::Applied));
        assert_eq!(
            j.state("p1"),
            Some(State::Applying),
            "the torn line did not finish"
        );
    }

    #[test]
    fn an_entrys_lines_rebuild_it_in_every_state() {
        let mut j = Journal::in_memory();
        for id in ["interrupted", "applied", "failed", "not-applied"] {
            j.applying(&pulse(id)).unwrap();
        }
        j.applied("applied").unwrap();
        j.failed("failed", "relay\nstuck").unwrap();
        j.resolve("not-applied", false).unwrap();
        for e in j.entries.values() {
            let mut rebuilt = Journal::in_memory();
            for line in e.lines() {
                // Through the text, as compaction writes it and `open` reads it.
                rebuilt.apply(Line::parse(&line.render()).unwrap());
            }
            let mut expected = e.clone();
            // The file keeps milliseconds and one line per entry.
            expected.at = chrono::SubsecRound::trunc_subsecs(e.at, 3);
            if let Some(r) = &mut expected.reason {
                *r = r.replace('\n', " ");
            }
            assert_eq!(rebuilt.entries[&e.id], expected, "{}", e.id);
        }
    }

    #[test]
    fn compaction_keeps_what_matters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulses.journal");
        let mut text = String::new();
        let old = "2020-01-01T00:00:00.000Z";
        for i in 0..COMPACT_AFTER_LINES {
            text.push_str(&format!(
                "applying old{i} 1 stripe 2020-01-01T00:00:00Z {old}\napplied old{i} {old}\n"
            ));
        }
        text.push_str(&format!(
            "applying stuck 1 stripe 2020-01-01T00:00:00Z {old}\n"
        ));
        std::fs::write(&path, text).unwrap();
        let kept = Journal::open(&path, false).unwrap();
        assert_eq!(
            kept.state("old1"),
            Some(State::Applied),
            "no age limit: nothing forgotten"
        );
        drop(kept);
        let mut j = Journal::open(&path, true).unwrap();
        assert_eq!(j.state("old1"), None, "old applied pulses are forgotten");
        assert_eq!(
            j.state("stuck"),
            Some(State::Applying),
            "interrupted ones never are"
        );
        j.applying(&pulse("new")).unwrap();
        j.applied("new").unwrap();
        drop(j);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 3);
        let j = Journal::open(&path, true).unwrap();
        assert_eq!(j.state("stuck"), Some(State::Applying));
        assert_eq!(j.state("new"), Some(State::Applied));
    }
}
