use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vzacct::cli::Cli::parse();
    match vzacct::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vzacct: error: {}", vzacct::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
