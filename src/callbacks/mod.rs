//! Callbacks out: facilities' and subsidy offices' own systems learn about every outcome
//! from signed HTTP callbacks (Standard Webhooks).
//!
//! - Publishing is a transactional outbox: a use case calls
//!   [`crate::store::callbacks::enqueue_in`] inside the transaction that makes the change it
//!   reports (or [`App::publish_event`] when it has none), so no event is lost or invented.
//! - [`endpoints`]: owners manage where callbacks go; secrets are sealed at rest
//!   ([`secrets`]) and signed per the spec ([`signing`]).
//! - [`worker`]: claims due deliveries with leases, signs, sends, retries on a schedule,
//!   through [`egress`]'s clients, which reach only addresses the egress rules allow.
//! - Delivery is at least once: receivers dedupe on `webhook-id` and use `object_version`
//!   to discard stale callbacks, since retries may reorder them.

pub mod bench;
pub mod egress;
pub mod endpoints;
pub mod secrets;
pub mod signing;
pub mod worker;

pub use crate::domain::callbacks::{EventOwner, EventType};

use crate::app::App;
use crate::domain::ids::EventId;
use crate::domain::time::UnixMs;
use crate::error::Result;

/// An event to publish: what happened to which object, for whom.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub owner: EventOwner,
    pub event_type: EventType,
    /// The object the event is about (`pay_...`, `bat_...`).
    pub object_id: String,
    /// The object's version after the change; rises with every change, so receivers can
    /// discard a callback older than one they already applied.
    pub object_version: i64,
    /// The event's data: a JSON object (with amounts as decimal strings of yuan).
    pub data: serde_json::Value,
}

impl App {
    /// Publish an event in a transaction of its own. Use cases that change state publish
    /// with `store::callbacks::enqueue_in` inside their own transaction instead.
    pub async fn publish_event(&self, event: NewEvent) -> Result<EventId> {
        Ok(self.store.enqueue(&event, UnixMs::now()).await?)
    }
}
