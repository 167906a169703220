//! The release party service: a release's maintenance window (recorded, moved, cancelled), which
//! release a maintenance notice belongs to, and the facts the checklist and the timeline show.

pub mod checklist;
pub use crate::party_facts as facts;
pub mod timeline;

mod service;
pub use service::*;
