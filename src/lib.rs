//! notify: the Moped team's release and maintenance notices, rendered from Markdown templates,
//! delivered one message per person with a record of every send, and the bounces that come
//! back, tied to the person and the notice and reviewed by an admin.
//!
//! Data flows one way: contacts + release notes -> render -> journal (store) -> send (mail).
//! `cli` parses arguments and `commands` orchestrates; the other modules each own one capability.

pub mod bounce;
pub mod calendar;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contacts;
pub mod delivery;
pub mod errors;
pub mod inert;
pub mod intake;
pub mod ledger;
pub mod mail;
pub mod net;
pub mod notice;
pub mod oauth;
pub mod party;
pub mod party_facts;
pub mod policy;
pub mod release;
pub mod render;
pub mod review;
pub mod serve;
pub mod store;
pub mod sync;
