#![allow(dead_code)]
pub mod dovecot;
pub mod oauth_server;
pub mod smtp_server;
pub mod webdriver;
