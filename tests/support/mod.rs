#![allow(dead_code)]
pub mod smtp_server;
