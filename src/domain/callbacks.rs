//! Callbacks out, as pure rules: which events exist, who owns them, what an endpoint URL may
//! look like, how an event body is laid out, and when a failed delivery is tried again.
//! No I/O: the worker hands in the clock and the random jitter.

use super::directory::{RegionPath, text_enum};
use super::ids::{EndpointId, EventId, FacilityId, RegionId};
use super::network::{EgressPolicy, Refusal};
use super::time::UnixMs;

/// Longest endpoint URL accepted. Long enough for any real receiver, short enough to keep
/// rows and log lines small.
pub const MAX_URL_LEN: usize = 2_048;
/// Most endpoints one facility or office may register: fan-out per event is bounded by it.
pub const MAX_ENDPOINTS_PER_OWNER: i64 = 20;
/// Largest event body carepay will send; bigger ones are a bug in the publishing use case.
pub const MAX_EVENT_BODY_BYTES: usize = 64 * 1024;
/// Jitter spreads retries of many deliveries that failed together over ±10% of the delay,
/// so a receiver coming back up is not hit by all of them in the same instant.
pub const JITTER_PERMILLE: i64 = 100;
/// A `Retry-After` longer than this is capped: a receiver cannot park an event forever.
pub const MAX_RETRY_AFTER_MS: i64 = 24 * 3_600_000;

/// The retry delays after attempt 1, 2, ...: about three days in all, front-loaded so a
/// short blip costs seconds and a long outage is still covered.
pub const DEFAULT_RETRY_SCHEDULE_MS: [i64; 11] = [
    5_000,      // 5 s
    300_000,    // 5 min
    1_800_000,  // 30 min
    7_200_000,  // 2 h
    18_000_000, // 5 h
    36_000_000, // 10 h
    36_000_000, 36_000_000, 36_000_000, 36_000_000, 36_000_000,
];

text_enum!(
    /// What happened, as the `type` of a callback body.
    EventType {
        PaymentSucceeded => "payment.succeeded",
        PaymentFailed => "payment.failed",
        PaymentReversed => "payment.reversed",
        RefundSucceeded => "refund.succeeded",
        RefundFailed => "refund.failed",
        TransferSucceeded => "transfer.succeeded",
        TransferFailed => "transfer.failed",
        /// A paid subsidy came back (the funding wallet's statement lists its TRANSFER_RETURN).
        TransferReturned => "transfer.returned",
        BatchCompleted => "batch.completed",
        ReconciliationCompleted => "reconciliation.completed",
        ReconciliationDiscrepancyFound => "reconciliation.discrepancy_found",
        /// carepay stopped delivering to one of the owner's endpoints (410, or failing too long).
        EndpointDisabled => "endpoint.disabled",
    }
);

text_enum!(
    /// Whether carepay delivers to an endpoint.
    EndpointStatus { Enabled => "enabled", Disabled => "disabled" }
);

text_enum!(
    /// Why an endpoint is disabled.
    DisabledReason {
        /// Its owner switched it off.
        Owner => "owner",
        /// The receiver answered 410 Gone.
        Gone => "gone",
        /// Every attempt failed for longer than the failure window.
        Failing => "failing",
    }
);

text_enum!(
    /// Where one event stands with one endpoint.
    DeliveryStatus {
        /// Waiting for its next attempt (or in flight).
        Pending => "pending",
        /// The receiver answered 2xx.
        Succeeded => "succeeded",
        /// Retries exhausted, 410, or the endpoint was disabled; replay brings it back.
        Failed => "failed",
    }
);

text_enum!(
    /// Whose systems an event is for.
    OwnerKind { Facility => "facility", Office => "office" }
);

/// Who receives an event: a facility, or a subsidy office (a node of the region tree).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventOwner {
    Facility(FacilityId),
    Office(RegionId),
}

impl EventOwner {
    pub fn kind(&self) -> OwnerKind {
        match self {
            EventOwner::Facility(_) => OwnerKind::Facility,
            EventOwner::Office(_) => OwnerKind::Office,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            EventOwner::Facility(id) => id.as_str(),
            EventOwner::Office(id) => id.as_str(),
        }
    }

    /// For values read back from our own database.
    pub fn from_trusted(kind: OwnerKind, id: String) -> EventOwner {
        match kind {
            OwnerKind::Facility => EventOwner::Facility(FacilityId::from_trusted(id)),
            OwnerKind::Office => EventOwner::Office(RegionId::from_trusted(id)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRuleError {
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    #[error("must be at most {MAX_URL_LEN} characters")]
    UrlTooLong,
    #[error("must not carry a user name or password; authenticate with the signature instead")]
    UrlCredentials,
    #[error("must not carry a #fragment")]
    UrlFragment,
    #[error("must name at least one event type")]
    NoEventTypes,
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("event body exceeds {MAX_EVENT_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("event data must be a JSON object")]
    DataNotObject,
    #[error("must list at least one delay in milliseconds")]
    EmptySchedule,
    #[error(
        "at most {max} retries ({attempts} attempts in all) are allowed; {given} given",
        max = RetrySchedule::MAX_RETRIES,
        attempts = RetrySchedule::MAX_RETRIES + 1
    )]
    TooManyRetries { given: usize },
    #[error(
        "each delay must be at least 1 ms and at most {max} ms (7 days); {given} given",
        max = RetrySchedule::MAX_DELAY_MS
    )]
    DelayOutOfRange { given: i64 },
}

/// A receiver URL: absolute http(s), bounded, without credentials or fragment. Parsed once
/// at the edge; what is stored is the normalised form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(raw: &str) -> Result<EndpointUrl, CallbackRuleError> {
        if raw.len() > MAX_URL_LEN {
            return Err(CallbackRuleError::UrlTooLong);
        }
        let url = url::Url::parse(raw.trim()).map_err(|_| CallbackRuleError::NotHttp)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(CallbackRuleError::NotHttp);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackRuleError::UrlCredentials);
        }
        if url.fragment().is_some() {
            return Err(CallbackRuleError::UrlFragment);
        }
        let normalised = String::from(url);
        if normalised.len() > MAX_URL_LEN {
            return Err(CallbackRuleError::UrlTooLong);
        }
        Ok(EndpointUrl(normalised))
    }

    pub fn from_trusted(raw: String) -> EndpointUrl {
        EndpointUrl(raw)
    }

    /// The host (a name or a literal address, as WHATWG parsing normalised it) and the port
    /// a request to this URL connects to.
    pub fn host_and_port(&self) -> Option<(url::Host<String>, u16)> {
        let url = url::Url::parse(&self.0).ok()?;
        Some((url.host()?.to_owned(), url.port_or_known_default()?))
    }

    /// Whether the egress rules let a callback go to this URL's host, as far as can be told
    /// without resolving a name (names are checked again, resolved, at connect time).
    pub fn check_target(&self, policy: &EgressPolicy) -> Result<(), Refusal> {
        match self.host_and_port() {
            Some((host, port)) => policy.check_host(&host, port),
            // Parsed when it was registered; a stored URL that no longer parses goes nowhere.
            None => Err(Refusal::Unusable),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types an endpoint wants: non-empty, without duplicates, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypes(Vec<EventType>);

impl EventTypes {
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<EventTypes, CallbackRuleError> {
        let mut types = raw
            .iter()
            .map(|name| {
                EventType::parse(name.as_ref()).ok_or_else(|| CallbackRuleError::UnknownEventType(name.as_ref().into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        types.sort();
        types.dedup();
        if types.is_empty() {
            return Err(CallbackRuleError::NoEventTypes);
        }
        Ok(EventTypes(types))
    }

    pub fn contains(&self, event_type: EventType) -> bool {
        self.0.contains(&event_type)
    }

    pub fn as_slice(&self) -> &[EventType] {
        &self.0
    }

    /// Stored as a comma-separated list (`payment.succeeded,refund.failed`).
    pub fn to_stored(&self) -> String {
        self.0.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Unknown names in stored text (a type retired by a later version) are skipped.
    pub fn from_stored(raw: &str) -> EventTypes {
        EventTypes(raw.split(',').filter_map(EventType::parse).collect())
    }
}

/// The exact bytes sent as the body of every attempt of an event:
/// `{"type": ..., "timestamp": ..., "data": {..., "object_id", "object_version"}}`.
/// `object_version` rises with every change of the object, so a receiver can discard a
/// callback older than one it already applied (deliveries are not ordered).
pub fn event_body(
    event_type: EventType,
    at: UnixMs,
    object_id: &str,
    object_version: i64,
    data: &serde_json::Value,
) -> Result<String, CallbackRuleError> {
    let serde_json::Value::Object(fields) = data else {
        return Err(CallbackRuleError::DataNotObject);
    };
    let mut fields = fields.clone();
    fields.insert("object_id".into(), object_id.into());
    fields.insert("object_version".into(), object_version.into());
    let body = serde_json::json!({
        "type": event_type.as_str(),
        "timestamp": at.to_rfc3339_shanghai(),
        "data": fields,
    })
    .to_string();
    if body.len() > MAX_EVENT_BODY_BYTES {
        return Err(CallbackRuleError::BodyTooLarge);
    }
    Ok(body)
}

/// Delays between attempts, in milliseconds (scaled down in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<i64>);

impl RetrySchedule {
    /// Longest single delay accepted.
    pub const MAX_DELAY_MS: i64 = 7 * 86_400_000;
    /// Most retries a schedule may hold.
    pub const MAX_RETRIES: usize = 50;

    pub fn new(delays_ms: Vec<i64>) -> Result<RetrySchedule, CallbackRuleError> {
        if delays_ms.is_empty() {
            return Err(CallbackRuleError::EmptySchedule);
        }
        if delays_ms.len() > Self::MAX_RETRIES {
            return Err(CallbackRuleError::TooManyRetries { given: delays_ms.len() });
        }
        if let Some(given) = delays_ms.iter().find(|delay| !(1..=Self::MAX_DELAY_MS).contains(*delay)) {
            return Err(CallbackRuleError::DelayOutOfRange { given: *given });
        }
        Ok(RetrySchedule(delays_ms))
    }

    pub fn delays_ms(&self) -> &[i64] {
        &self.0
    }

    /// Attempts in all: the first plus one per delay.
    pub fn max_attempts(&self) -> i64 {
        self.0.len() as i64 + 1
    }

    /// The delay before the attempt after attempt number `attempt` (1-based), with jitter:
    /// `jitter` in -1000..=1000 moves it by up to ±JITTER_PERMILLE‰. `None` when the
    /// schedule is used up.
    pub fn delay_after_ms(&self, attempt: i64, jitter: i64) -> Option<i64> {
        let base = *self.0.get(usize::try_from(attempt - 1).ok()?)?;
        let jitter = jitter.clamp(-1_000, 1_000);
        Some((base + base * JITTER_PERMILLE * jitter / 1_000_000).max(1))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule(DEFAULT_RETRY_SCHEDULE_MS.to_vec())
    }
}

/// What one HTTP attempt came to, as the worker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    /// The response status, or `None` when no response arrived (refused, reset, timeout).
    pub status_code: Option<u16>,
    /// The receiver's `Retry-After`, already in milliseconds.
    pub retry_after_ms: Option<i64>,
}

/// What to do with a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// 410 Gone: the receiver asks never to be called again; the endpoint is disabled.
    Gone,
    RetryAt(UnixMs),
    /// The schedule is used up.
    GiveUp,
}

/// Decide the fate of a delivery after its `attempt`-th attempt finished at `now`.
pub fn verdict(result: AttemptResult, attempt: i64, schedule: &RetrySchedule, now: UnixMs, jitter: i64) -> Verdict {
    match result.status_code {
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        _ => match schedule.delay_after_ms(attempt, jitter) {
            None => Verdict::GiveUp,
            Some(delay) => {
                // A receiver that says when to come back is obeyed, up to a cap; never sooner
                // than the schedule, which already spaces attempts out.
                let asked = result.retry_after_ms.map_or(0, |ms| ms.clamp(0, MAX_RETRY_AFTER_MS));
                Verdict::RetryAt(UnixMs(now.0 + delay.max(asked)))
            }
        },
    }
}

/// `Retry-After` as delta-seconds (the form receivers send in practice); an HTTP-date or
/// anything else is ignored and the schedule applies.
pub fn parse_retry_after(raw: &str) -> Option<i64> {
    let seconds: i64 = raw.trim().parse().ok()?;
    (seconds >= 0).then(|| seconds.saturating_mul(1_000))
}

/// Most bytes of a receiver's answer kept with an attempt: enough to see what went wrong,
/// too little to make carepay a way of reading other systems' pages.
pub const MAX_RESPONSE_EXCERPT_BYTES: usize = 1_024;

/// What is kept of a receiver's answer: at most `max_bytes` of it (cut at a character
/// boundary), as text, with control characters (line breaks and terminal escapes included)
/// replaced by spaces so the excerpt cannot forge lines in a log or a terminal.
pub fn response_excerpt(body: &[u8], max_bytes: usize) -> String {
    let body = &body[..body.len().min(max_bytes.min(MAX_RESPONSE_EXCERPT_BYTES))];
    // A character cut at the end is dropped rather than shown as a replacement character.
    let complete = match std::str::from_utf8(body) {
        Ok(_) => body,
        Err(error) if error.error_len().is_none() => &body[..error.valid_up_to()],
        Err(_) => body,
    };
    String::from_utf8_lossy(complete).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// An endpoint as stored, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub owner: EventOwner,
    /// The owner's region path (the facility's region, or the office's own node): scope.
    pub region_path: RegionPath,
    pub url: EndpointUrl,
    pub event_types: EventTypes,
    pub status: EndpointStatus,
    pub disabled_reason: Option<DisabledReason>,
    /// `whpk_...` when the endpoint also gets `v1a` (Ed25519) signatures.
    pub public_key: Option<String>,
    /// Until when the previous `whsec_` secret still signs alongside the current one.
    pub previous_secret_until: Option<UnixMs>,
    pub consecutive_failures: i64,
    pub failing_since: Option<UnixMs>,
    pub version: i64,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// One event as it stands with one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub event_type: EventType,
    pub object_id: String,
    pub object_version: i64,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<UnixMs>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub event_created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// One HTTP attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub id: super::ids::AttemptId,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub attempt: i64,
    pub started_at: UnixMs,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    /// Why no response arrived (`timeout`, `connect`, ...), when none did.
    pub error: Option<String>,
    /// The first bytes of the response body, for the owner's debugging.
    pub response_excerpt: String,
    pub next_attempt_at: Option<UnixMs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_plain_http_or_https() {
        assert!(EndpointUrl::parse("https://billing.example.cn/carepay").is_ok());
        assert!(EndpointUrl::parse("http://127.0.0.1:9000/hook?x=1").is_ok());
        for bad in [
            "ftp://example.cn/x",
            "javascript:alert(1)",
            "/relative",
            "https://user:pw@example.cn/",
            "https://token@example.cn/",
            "https://example.cn/#frag",
            "",
            "http://",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("https://example.cn/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(EndpointUrl::parse(&long), Err(CallbackRuleError::UrlTooLong));
    }

    #[test]
    fn event_types_are_known_deduplicated_and_round_trip_through_storage() {
        let types = EventTypes::parse(&["refund.failed", "payment.succeeded", "refund.failed"]).unwrap();
        assert_eq!(types.as_slice(), &[EventType::PaymentSucceeded, EventType::RefundFailed]);
        assert_eq!(EventTypes::from_stored(&types.to_stored()), types);
        assert_eq!(EventTypes::parse::<&str>(&[]), Err(CallbackRuleError::NoEventTypes));
        assert!(matches!(EventTypes::parse(&["payment.done"]), Err(CallbackRuleError::UnknownEventType(_))));
        for event_type in EventType::ALL {
            assert_eq!(EventType::parse(event_type.as_str()), Some(*event_type));
        }
    }

    #[test]
    fn a_refused_schedule_names_the_limit_it_broke() {
        assert_eq!(RetrySchedule::new(Vec::new()), Err(CallbackRuleError::EmptySchedule));
        assert!(RetrySchedule::new(vec![1; RetrySchedule::MAX_RETRIES]).is_ok());
        let too_many = RetrySchedule::new(vec![1; RetrySchedule::MAX_RETRIES + 1]).unwrap_err();
        assert_eq!(too_many.to_string(), "at most 50 retries (51 attempts in all) are allowed; 51 given");
        let too_long = RetrySchedule::new(vec![1, RetrySchedule::MAX_DELAY_MS + 1]).unwrap_err();
        assert_eq!(
            too_long.to_string(),
            "each delay must be at least 1 ms and at most 604800000 ms (7 days); 604800001 given"
        );
        assert_eq!(RetrySchedule::new(vec![0]), Err(CallbackRuleError::DelayOutOfRange { given: 0 }));
    }

    #[test]
    fn excerpts_are_short_whole_characters_without_control_characters() {
        assert_eq!(response_excerpt(b"ok", 256), "ok");
        assert_eq!(response_excerpt(b"line one\r\nline two\x1b[31m", 256), "line one  line two [31m");
        assert_eq!(response_excerpt("午餐".as_bytes(), 4), "午", "a cut character is dropped");
        assert_eq!(response_excerpt(b"\xff\xfeabc", 256), "\u{fffd}\u{fffd}abc");
        assert_eq!(response_excerpt(&[b'a'; 5_000], 256).len(), 256);
        assert_eq!(response_excerpt(&[b'a'; 5_000], usize::MAX).len(), MAX_RESPONSE_EXCERPT_BYTES);
        assert_eq!(response_excerpt(b"anything", 0), "");
    }

    #[test]
    fn the_default_schedule_spans_about_three_days() {
        let total_ms: i64 = DEFAULT_RETRY_SCHEDULE_MS.iter().sum();
        assert!((2 * 86_400_000..4 * 86_400_000).contains(&total_ms), "{total_ms}");
        assert!(RetrySchedule::new(DEFAULT_RETRY_SCHEDULE_MS.to_vec()).is_ok());
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_the_schedule_ends() {
        let schedule = RetrySchedule::new(vec![1_000, 60_000]).unwrap();
        assert_eq!(schedule.delay_after_ms(1, 0), Some(1_000));
        assert_eq!(schedule.delay_after_ms(1, 1_000), Some(1_100));
        assert_eq!(schedule.delay_after_ms(1, -1_000), Some(900));
        assert_eq!(schedule.delay_after_ms(2, 5_000), Some(66_000), "jitter is clamped");
        assert_eq!(schedule.delay_after_ms(3, 0), None);
        assert_eq!(schedule.delay_after_ms(0, 0), None);
        assert_eq!(schedule.max_attempts(), 3);
    }

    #[test]
    fn verdicts_follow_the_status_and_retry_after() {
        let schedule = RetrySchedule::new(vec![1_000]).unwrap();
        let now = UnixMs(10_000);
        let result = |status_code, retry_after_ms| AttemptResult { status_code, retry_after_ms };
        assert_eq!(verdict(result(Some(204), None), 1, &schedule, now, 0), Verdict::Delivered);
        assert_eq!(verdict(result(Some(410), None), 1, &schedule, now, 0), Verdict::Gone);
        assert_eq!(verdict(result(Some(500), None), 1, &schedule, now, 0), Verdict::RetryAt(UnixMs(11_000)));
        assert_eq!(verdict(result(None, None), 1, &schedule, now, 0), Verdict::RetryAt(UnixMs(11_000)));
        assert_eq!(verdict(result(Some(429), Some(5_000)), 1, &schedule, now, 0), Verdict::RetryAt(UnixMs(15_000)));
        assert_eq!(
            verdict(result(Some(503), Some(i64::MAX)), 1, &schedule, now, 0),
            Verdict::RetryAt(UnixMs(10_000 + MAX_RETRY_AFTER_MS))
        );
        assert_eq!(verdict(result(Some(500), None), 2, &schedule, now, 0), Verdict::GiveUp);
        assert_eq!(verdict(result(Some(301), None), 2, &schedule, now, 0), Verdict::GiveUp);
        assert_eq!(parse_retry_after(" 120 "), Some(120_000));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn the_body_carries_type_timestamp_and_the_object_version() {
        let body = event_body(
            EventType::PaymentSucceeded,
            UnixMs(1_795_828_502_000),
            "pay_1",
            3,
            &serde_json::json!({"amount": "12.50"}),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["type"], "payment.succeeded");
        assert_eq!(value["timestamp"], "2026-11-28T09:15:02+08:00");
        assert_eq!(value["data"]["amount"], "12.50");
        assert_eq!(value["data"]["object_version"], 3);
        assert_eq!(
            event_body(EventType::PaymentFailed, UnixMs(0), "x", 1, &serde_json::json!([1])),
            Err(CallbackRuleError::DataNotObject)
        );
        let huge = serde_json::json!({"blob": "x".repeat(MAX_EVENT_BODY_BYTES)});
        assert_eq!(
            event_body(EventType::PaymentFailed, UnixMs(0), "x", 1, &huge),
            Err(CallbackRuleError::BodyTooLarge)
        );
    }
}
