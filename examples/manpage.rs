//! Writes vzacct's man pages, generated from the clap definitions in `vzacct::cli::Cli` (the
//! same doc comments as `--help`): `vzacct.8` and one `vzacct-<subcommand>.8` per subcommand,
//! which `vzacct.8` lists. `packaging/build.sh` runs it for the packages; `tests/packaging.rs`
//! renders the pages again through [`pages`] and compares them with the packaged ones.
//! clap_mangen is a dev-dependency: the vzacct binary does not carry it.
//!
//! `cargo run --example manpage -- DIR`

use clap::CommandFactory;

/// Every page as (file name, roff text).
pub fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let cmd = vzacct::cli::Cli::command();
    let mut pages = Vec::new();
    let mut render = |file: String, cmd: clap::Command| -> std::io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .source(concat!("vzacct ", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        pages.push((file, out));
        Ok(())
    };
    render("vzacct.8".into(), cmd.clone())?;
    // A hidden command (the threshold wrapper that dumps start) has no page, as it has no
    // line in `--help`.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("vzacct-{}", sub.get_name());
        // Title and NAME say vzacct-add, the synopsis the command as it is typed.
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("vzacct {}", sub.get_name()));
        render(format!("{name}.8"), sub)?;
    }
    Ok(pages)
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: manpage DIR"))?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    for (file, text) in pages()? {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}
