#![allow(dead_code)]
pub mod dovecot;
pub mod smtp_server;
