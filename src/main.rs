//! Dispatch to the supervisor, `ctl`, `bpm`, `monit`, `probe`, `install`
//! or `logs`, and the one place where errors (and help, which is no error)
//! become output and exit codes.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use container_run::cli::RunArgs;
use container_run::error::{self, Fatal};
use container_run::{client, logger, supervisor};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let as_bpm = invoked_as == "bpm";
    error::set_program(match invoked_as.as_str() {
        "bpm" => "bpm",
        "monit" => "monit",
        _ => "container-run",
    });
    let result = if as_bpm {
        client::bpm::main(args)
    } else if invoked_as == "monit" {
        client::monit::main(args)
    } else {
        match args.get(1).and_then(|a| a.to_str()) {
            Some("ctl") => client::ctl::main(args[1..].to_vec()),
            Some("bpm") => client::bpm::main(args[1..].to_vec()),
            Some("monit") => client::monit::main(args[1..].to_vec()),
            Some("probe") => client::probe::main(args[1..].to_vec()),
            Some("help") => help(&args),
            Some("install") => container_run::install::main(args[1..].to_vec()),
            Some("logs") => container_run::logs::main(args[1..].to_vec()),
            _ => run(args),
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fatal::Shown(text)) => {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}");
            if !text.ends_with('\n') {
                let _ = writeln!(out);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            error::report(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

/// `container-run help [MODE]`: that mode's `--help`.
fn help(args: &[OsString]) -> Result<u8, Fatal> {
    let flag = || OsString::from("--help");
    match args.get(2).and_then(|a| a.to_str()) {
        Some("ctl") => client::ctl::main(vec!["ctl".into(), flag()]),
        Some("bpm") => client::bpm::main(vec!["bpm".into(), flag()]),
        Some("monit") => client::monit::main(vec!["monit".into(), flag()]),
        Some("probe") => client::probe::main(vec!["probe".into(), flag()]),
        Some("install") => container_run::install::main(vec!["install".into(), flag()]),
        Some("logs") => container_run::logs::main(vec!["logs".into(), flag()]),
        _ => run(vec![args[0].clone(), flag()]),
    }
}

fn run(args: Vec<OsString>) -> Result<u8, Fatal> {
    let config = client::parse::<RunArgs>(args.clone(), "container-run")
        .map_err(|e| client_verb_hint(&args).unwrap_or(e))?
        .validate()?;
    logger::init(config.debug);
    supervisor::run(config)
}

/// `container-run status web` is a client command missing its mode: say
/// which command was meant rather than that --job-name is missing.
fn client_verb_hint(args: &[OsString]) -> Option<Fatal> {
    let verb = args.get(1)?.to_str()?;
    // ctl's own verbs, so that the hint cannot drift from them.
    let is_ctl_verb = <client::ctl::Verb as clap::ValueEnum>::from_str(verb, false).is_ok();
    is_ctl_verb.then(|| {
        let rest: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Fatal::Usage(format!(
            "'{verb}' is a verb of ctl: container-run ctl {} (see container-run --help)",
            rest.join(" ")
        ))
    })
}
