//! The journal state of one send, typed. The database stores it as text (`sends.state`); this module
//! owns the names and nothing else reads or writes them as strings.

use std::fmt;

use serde::Serialize;

/// Where one send stands. Variants are declared in the order of their names so that maps keyed by
/// state list them in the same order as before (alphabetical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendState {
    /// A temporary failure: tried again later.
    Deferred,
    /// Refused for good by the server (a recipient-side 5xx).
    Failed,
    /// Not yet tried.
    Pending,
    /// Claimed by a worker under a lease.
    Sending,
    /// Accepted by the SMTP server.
    Sent,
    /// Written to the outbox directory (not sent).
    Written,
}

impl SendState {
    /// Every state, in order.
    pub const ALL: [SendState; 6] = [
        SendState::Deferred,
        SendState::Failed,
        SendState::Pending,
        SendState::Sending,
        SendState::Sent,
        SendState::Written,
    ];

    /// The name stored in `sends.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Deferred => "deferred",
            SendState::Failed => "failed",
            SendState::Pending => "pending",
            SendState::Sending => "sending",
            SendState::Sent => "sent",
            SendState::Written => "written",
        }
    }

    /// The state stored as `name`, if it is one.
    pub fn parse(name: &str) -> Option<SendState> {
        SendState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The send is over for this notice (delivered, or refused for good).
    pub fn is_final(self) -> bool {
        matches!(self, SendState::Sent | SendState::Failed)
    }
}

impl fmt::Display for SendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for SendState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_as_text_does() {
        for s in SendState::ALL {
            assert_eq!(SendState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(SendState::parse("Sent"), None);
        assert_eq!(SendState::parse(""), None);
        let mut by_name = SendState::ALL;
        by_name.sort_by_key(|s| s.as_str());
        assert_eq!(by_name, SendState::ALL);
        assert_eq!(format!("[{:<8}]", SendState::Sent), "[sent    ]");
    }
}
