use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: bounce parsing makes many small, short-lived
/// strings, and it measured faster there (BENCHMARKS.md, issue 14).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = notify::cli::Cli::parse();
    notify::commands::main(cli)
}
