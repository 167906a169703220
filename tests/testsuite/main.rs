//! One integration-test binary: the real `notify` binary against real SMTP servers on loopback
//! (Postfix's smtp-sink and a scripted in-process server for faults), SQLite and PostgreSQL.

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod mime;

mod bad_input;
mod bounces;
mod contacts;
mod delivery;
mod edges;
mod faults;
mod hostile;
mod load;
mod oauth;
mod party;
mod rendering;
mod sender;
mod serve;
mod serve_archive;
mod serve_review;
mod serve_ses;
mod tls;
mod verp;
