//! Dispatch to the supervisor, `ctl`, `bpm` or `probe`, and the one place
//! where errors become exit codes.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use container_run::cli::RunArgs;
use container_run::client;
use container_run::error::Fatal;
use container_run::{logger, supervisor};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = if invoked_as == "bpm" {
        client::bpm::main(args)
    } else {
        match args.get(1).and_then(|a| a.to_str()) {
            Some("ctl") => client::ctl::main(args[1..].to_vec()),
            Some("bpm") => client::bpm::main(args[1..].to_vec()),
            Some("probe") => client::probe::main(args[1..].to_vec()),
            Some("install") => container_run::install::main(args[1..].to_vec()),
            _ => run(args),
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("container-run: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(args: Vec<OsString>) -> Result<u8, Fatal> {
    let config = client::parse_or_exit(RunArgs::try_parse_from(args))?.validate()?;
    logger::init(config.debug);
    supervisor::run(config)
}
