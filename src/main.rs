use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = notify::cli::Cli::parse();
    notify::commands::main(cli)
}
