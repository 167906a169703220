//! Mail: building one message per recipient, the VERP envelope sender that ties a bounce back to
//! one send, and the transports (SMTP, the outbox folder) with a send error that says whether a
//! retry can help and which step the server refused. `refusal` says whose fault a refusal is
//! (a recipient's, the sender's, or a request to slow down); `sender` holds the rate limiter,
//! the group commit and the retry policy. Nothing here touches the database.

pub mod message;
pub mod refusal;
pub mod sender;
pub mod smtp;
pub mod transport;
pub mod verp;

pub use message::{build, Outgoing};
pub use transport::{Delivery, SendError, SmtpTarget, Stage};

/// Check that the configured bounce address can carry a VERP token (`local+TOKEN@domain`).
pub fn check_bounce_address(addr: &str) -> Result<(), String> {
    let parsed: lettre::Address = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not a mail address ({e})"))?;
    if parsed.user().contains('+') {
        return Err(format!(
            "`{addr}` already has a '+' in it; notify adds `+TOKEN` to the local part itself"
        ));
    }
    if parsed.user().len() + 1 + verp::TOKEN_MAX_LEN > 64 {
        return Err(format!(
            "the local part of `{addr}` is too long to carry a VERP token (64 characters at most)"
        ));
    }
    Ok(())
}
