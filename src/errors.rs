//! The two error kinds every layer may return besides its own typed errors: bad input given to
//! a run (exit code 2) and a run that could not finish its work (exit code 1). They live here,
//! below the commands, so that library services return them without importing a command.

/// Bad input given on the command line (a time, an address, a flag combination) or to a service.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The run ended without finishing its work; the message says what is left.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Incomplete(pub String);
