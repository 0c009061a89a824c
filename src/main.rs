use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One malloc arena: a command's threads (the kernel read beside the ledger load) would
    // otherwise each keep an arena whose freed memory the others cannot reuse (3.3 MiB
    // more peak RSS for a dump at 10,000 containers).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cli = vzacct::cli::Cli::parse();
    match vzacct::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vzacct: error: {}", vzacct::commands::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
