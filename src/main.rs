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
    let client_mode = as_bpm
        || invoked_as == "monit"
        || matches!(
            args.get(1).and_then(|a| a.to_str()),
            Some("ctl" | "bpm" | "monit" | "probe" | "install" | "help")
        );
    if client_mode {
        // A reader that goes away (`| head`) ends a client quietly, as it
        // ends any command-line tool: by SIGPIPE, not by a panic on a
        // failed print. The supervisor keeps ignoring SIGPIPE (Rust's
        // default): its writes are its own business; so does the logs
        // mode, which ends on a closed stdout with exit 0 by itself.
        // SAFETY: resetting one disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = if as_bpm {
        client::bpm::main(args)
    } else if invoked_as == "monit" {
        client::monit::main(args)
    } else {
        match args.get(1).and_then(|a| a.to_str()) {
            Some("help") => help(&args),
            Some(word) => match mode(word) {
                Some(main) => main(args[1..].to_vec()),
                None => run(args),
            },
            None => run(args),
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

type ModeMain = fn(Vec<OsString>) -> Result<u8, Fatal>;

/// Every mode of the binary besides running a job, by the word that
/// selects it: one table for dispatch, `help MODE` and the hints.
const MODES: [(&str, ModeMain); 6] = [
    ("ctl", client::ctl::main),
    ("bpm", client::bpm::main),
    ("monit", client::monit::main),
    ("probe", client::probe::main),
    ("install", container_run::install::main),
    ("logs", container_run::logs::main),
];

fn mode(word: &str) -> Option<ModeMain> {
    MODES
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, main)| *main)
}

/// `container-run help [MODE]`: that mode's `--help`.
fn help(args: &[OsString]) -> Result<u8, Fatal> {
    let flag = || OsString::from("--help");
    match args.get(2).and_then(|a| a.to_str()) {
        None => run(vec![args[0].clone(), flag()]),
        Some(word) => match mode(word) {
            Some(main) => main(vec![word.into(), flag()]),
            None => Err(unknown_mode(word)),
        },
    }
}

fn run(args: Vec<OsString>) -> Result<u8, Fatal> {
    let config = container_run::cli::parse::<RunArgs>(args.clone(), "container-run")
        .map_err(|e| {
            client_verb_hint(&args)
                .or_else(|| mode_hint(&args))
                .unwrap_or(e)
        })?
        .validate()?;
    logger::init(config.debug);
    supervisor::run(config)
}

/// A first word close to a mode's name (`ctrl`, `CTL`, `moint`) is a
/// mistyped mode, not a job run without `--job-name`.
fn mode_hint(args: &[OsString]) -> Option<Fatal> {
    let word = args.get(1)?.to_str()?;
    let close = !word.starts_with('-')
        && MODES
            .iter()
            .any(|(name, _)| container_run::cli::is_close(word, name));
    close.then(|| unknown_mode(word))
}

fn unknown_mode(word: &str) -> Fatal {
    let names: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
    let hint = names
        .iter()
        .find(|name| container_run::cli::is_close(word, name))
        .map_or_else(
            || format!("the modes are {}", names.join(", ")),
            |name| format!("did you mean {name}?"),
        );
    Fatal::Usage(format!(
        "unknown mode '{}': {hint} (see container-run --help)",
        client::escape(word)
    ))
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
