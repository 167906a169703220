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

// The bounce address the configuration accepted has room for every token VERP makes.
const _: () = assert!(verp::TOKEN_MAX_LEN <= crate::config::VERP_TOKEN_MAX_LEN);
