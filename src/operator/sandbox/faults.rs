//! Fault injection: the sandbox misbehaving on purpose, the way a real operator sometimes
//! does. Rules are consumed in order, each for its `count` matching occurrences; at most
//! [`MAX_FAULT_RULES`] wait at once.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Rules waiting at once, per kind (request, notification, statement).
pub const MAX_FAULT_RULES: usize = 64;
/// Copies a duplicated notification may get.
pub const MAX_DUPLICATE_COPIES: u32 = 10;

/// What happens to a matching operator request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestFaultKind {
    /// Apply the request, then hold the answer past any sane client timeout.
    TimeoutAfterApply,
    /// Apply the request, then answer 500.
    ErrorAfterApply,
    /// Answer 500 without applying anything.
    ErrorBeforeApply,
}

/// What happens to a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NotificationFault {
    /// Deliver this many extra copies (same event id) right after the first.
    Duplicate { copies: u32 },
    /// Wait before the first attempt.
    Delay { delay_ms: u64 },
    /// Hold this notification back and deliver it after the next one.
    Reorder,
    /// Never deliver it.
    Drop,
}

/// How a statement file is falsified. The trailer is recomputed, so the file stays
/// well-formed and only disagrees with what really happened, except for
/// `CorruptTrailer`, which leaves lines alone and lies in the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementTamper {
    DropLine,
    AddLine,
    ChangeAmount,
    CorruptTrailer,
}

/// The body of `POST /sandbox/faults`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "target")]
pub enum FaultSpec {
    Request {
        kind: RequestFaultKind,
        #[serde(default)]
        path_prefix: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    Notification {
        fault: NotificationFault,
        #[serde(default = "one")]
        count: u32,
    },
    Statement {
        tamper: StatementTamper,
        #[serde(default = "one")]
        count: u32,
    },
}

fn one() -> u32 {
    1
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("at most {MAX_FAULT_RULES} fault rules may wait at once")]
    TooManyRules,
    #[error("count must be at least 1")]
    ZeroCount,
    #[error("at most {MAX_DUPLICATE_COPIES} duplicate copies")]
    TooManyCopies,
}

#[derive(Debug)]
struct Rule<T> {
    what: T,
    path_prefix: Option<String>,
    remaining: u32,
}

#[derive(Debug, Default)]
struct Rules {
    request: VecDeque<Rule<RequestFaultKind>>,
    notification: VecDeque<Rule<NotificationFault>>,
    statement: VecDeque<Rule<StatementTamper>>,
}

/// The waiting fault rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Rules>,
}

impl Faults {
    pub fn add(&self, spec: FaultSpec) -> Result<(), FaultError> {
        let mut rules = self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match spec {
            FaultSpec::Request { kind, path_prefix, count } => {
                push(&mut rules.request, Rule { what: kind, path_prefix, remaining: count })
            }
            FaultSpec::Notification { fault, count } => {
                if let NotificationFault::Duplicate { copies } = fault
                    && copies > MAX_DUPLICATE_COPIES
                {
                    return Err(FaultError::TooManyCopies);
                }
                push(&mut rules.notification, Rule { what: fault, path_prefix: None, remaining: count })
            }
            FaultSpec::Statement { tamper, count } => {
                push(&mut rules.statement, Rule { what: tamper, path_prefix: None, remaining: count })
            }
        }
    }

    /// The next `count` requests (whose path starts with `path_prefix`, if given) fail so.
    pub fn fail_requests(
        &self,
        kind: RequestFaultKind,
        path_prefix: Option<&str>,
        count: u32,
    ) -> Result<(), FaultError> {
        self.add(FaultSpec::Request { kind, path_prefix: path_prefix.map(str::to_owned), count })
    }

    pub fn disturb_notifications(&self, fault: NotificationFault, count: u32) -> Result<(), FaultError> {
        self.add(FaultSpec::Notification { fault, count })
    }

    pub fn tamper_statements(&self, tamper: StatementTamper, count: u32) -> Result<(), FaultError> {
        self.add(FaultSpec::Statement { tamper, count })
    }

    pub fn clear(&self) {
        *self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Rules::default();
    }

    pub(crate) fn take_request(&self, path: &str) -> Option<RequestFaultKind> {
        let mut rules = self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        take(&mut rules.request, |rule| rule.path_prefix.as_deref().is_none_or(|prefix| path.starts_with(prefix)))
    }

    pub(crate) fn take_notification(&self) -> Option<NotificationFault> {
        take(&mut self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).notification, |_| true)
    }

    pub(crate) fn take_statement(&self) -> Option<StatementTamper> {
        take(&mut self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).statement, |_| true)
    }
}

fn push<T>(queue: &mut VecDeque<Rule<T>>, rule: Rule<T>) -> Result<(), FaultError> {
    if rule.remaining == 0 {
        return Err(FaultError::ZeroCount);
    }
    if queue.len() >= MAX_FAULT_RULES {
        return Err(FaultError::TooManyRules);
    }
    queue.push_back(rule);
    Ok(())
}

fn take<T: Copy>(queue: &mut VecDeque<Rule<T>>, matches: impl Fn(&Rule<T>) -> bool) -> Option<T> {
    let index = queue.iter().position(matches)?;
    let rule = &mut queue[index];
    let what = rule.what;
    rule.remaining -= 1;
    if rule.remaining == 0 {
        queue.remove(index);
    }
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rules_match_their_prefix_and_run_out() {
        let faults = Faults::default();
        faults.fail_requests(RequestFaultKind::ErrorBeforeApply, Some("/v1/refunds"), 2).unwrap();
        assert_eq!(faults.take_request("/v1/payments/code"), None);
        assert_eq!(faults.take_request("/v1/refunds"), Some(RequestFaultKind::ErrorBeforeApply));
        assert_eq!(faults.take_request("/v1/refunds/R1"), Some(RequestFaultKind::ErrorBeforeApply));
        assert_eq!(faults.take_request("/v1/refunds"), None);
    }

    #[test]
    fn the_fault_spec_reads_from_json() {
        let spec: FaultSpec =
            serde_json::from_str(r#"{"target":"notification","fault":{"kind":"duplicate","copies":2},"count":3}"#)
                .unwrap();
        assert_eq!(spec, FaultSpec::Notification { fault: NotificationFault::Duplicate { copies: 2 }, count: 3 });
        let spec: FaultSpec = serde_json::from_str(r#"{"target":"request","kind":"timeout_after_apply"}"#).unwrap();
        assert_eq!(spec, FaultSpec::Request { kind: RequestFaultKind::TimeoutAfterApply, path_prefix: None, count: 1 });
    }

    #[test]
    fn rules_are_bounded() {
        let faults = Faults::default();
        for _ in 0..MAX_FAULT_RULES {
            faults.tamper_statements(StatementTamper::DropLine, 1).unwrap();
        }
        assert_eq!(faults.tamper_statements(StatementTamper::DropLine, 1), Err(FaultError::TooManyRules));
        assert_eq!(faults.disturb_notifications(NotificationFault::Drop, 0), Err(FaultError::ZeroCount));
    }
}
