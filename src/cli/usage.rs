//! From clap's parse to what main prints: every mode's command line is
//! parsed under the name the user typed (`container-run ctl`, `bpm`), help
//! and version come back as text for stdout, and every other clap error
//! becomes one line naming what is wrong, with clap's suggestion when it has
//! one (`did you mean '--base-dir'?`).

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::error::Fatal;

/// Parse one mode's command line under the name the user typed
/// (`container-run`, `container-run ctl`, `bpm`), so that usage lines say
/// it. `--help` and `--version` come back as `Fatal::Shown` (main prints
/// them and exits 0); every other clap error becomes one usage line.
pub fn parse<T: clap::Parser>(args: Vec<OsString>, bin_name: &str) -> Result<T, Fatal> {
    let mut cmd = env_values_only_when_set(T::command()).bin_name(bin_name.to_string());
    let matches = cmd
        .try_get_matches_from_mut(args)
        .map_err(|e| usage_error(&e, bin_name))?;
    T::from_arg_matches(&matches).map_err(|e| usage_error(&e, bin_name))
}

/// `[env: NAME=VALUE]` in the help when NAME is set; `[env: NAME]` when it
/// is not, rather than clap's `[env: NAME=]`, which reads as "set to empty".
fn env_values_only_when_set(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let unset = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_none());
        if unset {
            arg.hide_env_values(true)
        } else {
            arg
        }
    })
}

/// A clap error as what main prints: help and version as text for stdout,
/// anything else as one line naming what is wrong.
pub fn usage_error(e: &clap::Error, bin_name: &str) -> Fatal {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Fatal::Shown(e.to_string()),
        _ => Fatal::Usage(format!("{} (see {bin_name} --help)", clap_message(e))),
    }
}

/// clap's error kind and context rendered into one line; clap's own
/// rendering spreads the names of missing arguments and the valid values
/// over several lines.
fn clap_message(e: &clap::Error) -> String {
    let arg = context(e, ContextKind::InvalidArg).join(", ");
    let value = context(e, ContextKind::InvalidValue).join(", ");
    let suggested = |kind| context(e, kind).join(" or ");
    match e.kind() {
        ErrorKind::MissingRequiredArgument => {
            let missing = context(e, ContextKind::InvalidArg);
            let s = if missing.len() == 1 { "" } else { "s" };
            format!("missing required argument{s}: {}", missing.join(", "))
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "missing required argument: <COMMAND>".to_string()
        }
        ErrorKind::InvalidValue => invalid_value(e, &value, &arg),
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map_or(String::new(), |s| format!(": {s}"));
            format!("invalid value '{value}' for {arg}{why}")
        }
        ErrorKind::InvalidSubcommand => with_hint(
            format!(
                "unknown command '{}'",
                context(e, ContextKind::InvalidSubcommand).join(", ")
            ),
            &suggested(ContextKind::SuggestedSubcommand),
        ),
        ErrorKind::UnknownArgument => with_hint(
            format!("unexpected argument '{arg}'"),
            &quoted(&suggested(ContextKind::SuggestedArg)),
        ),
        ErrorKind::ArgumentConflict => {
            let prior = context(e, ContextKind::PriorArg).join(", ");
            if prior.is_empty() {
                format!("{arg} cannot be used here")
            } else {
                format!("{arg} cannot be used with {prior}")
            }
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    }
}

/// One kind of clap's error context, as strings.
fn context(e: &clap::Error, kind: ContextKind) -> Vec<String> {
    match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        Some(ContextValue::StyledStr(s)) => vec![s.to_string()],
        Some(ContextValue::StyledStrs(v)) => v.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

fn quoted(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("'{s}'")
    }
}

/// `message: did you mean HINT?` when clap has one.
fn with_hint(message: String, hint: &str) -> String {
    if hint.is_empty() {
        message
    } else {
        format!("{message}: did you mean {hint}?")
    }
}

fn invalid_value(e: &clap::Error, value: &str, arg: &str) -> String {
    let valid = context(e, ContextKind::ValidValue).join(", ");
    let suggested = context(e, ContextKind::SuggestedValue).join(" or ");
    if valid.is_empty() {
        format!("invalid value '{value}' for {arg}")
    } else if suggested.is_empty() {
        format!("invalid value '{value}' for {arg}: expected one of {valid}")
    } else {
        format!("invalid value '{value}' for {arg}: did you mean '{suggested}'? (one of {valid})")
    }
}

/// `help` as the first word of a mode prints its help, as `--help` does.
pub fn help_word_to_flag(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_some_and(|a| a == "help") {
        args.truncate(1);
        args.push("--help".into());
    }
    args
}

/// What usage lines call a mode: `bpm` when the binary is invoked as bpm
/// (or `monit` as monit), `container-run bpm` otherwise.
pub fn mode_bin_name(mode: &str) -> String {
    match crate::error::program() {
        p if p == mode => mode.to_string(),
        other => format!("{other} {mode}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, clap::ValueEnum)]
    enum Verb {
        Start,
        Stop,
        Status,
    }

    #[derive(Debug, clap::Parser)]
    struct Demo {
        #[arg(value_enum)]
        verb: Verb,
        #[arg(long = "job-name", value_name = "JOB")]
        job: String,
        #[arg(long, value_parser = crate::cli::parse_duration)]
        timeout: Option<Duration>,
    }

    fn message(args: &[&str]) -> String {
        let args = args.iter().map(OsString::from).collect();
        match parse::<Demo>(args, "demo") {
            Err(Fatal::Usage(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clap_errors_become_one_line_naming_what_is_wrong() {
        assert_eq!(
            message(&["demo", "stop"]),
            "missing required argument: --job-name <JOB> (see demo --help)"
        );
        assert_eq!(
            message(&["demo"]),
            "missing required arguments: --job-name <JOB>, <VERB> (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stat", "--job-name", "j"]),
            "invalid value 'stat' for <VERB>: did you mean 'start'? (one of start, stop, status) \
             (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stop", "--job-name", "j", "--timeout", "5x"]),
            "invalid value '5x' for --timeout <TIMEOUT>: invalid unit \"x\" in duration \"5x\" \
             (use ms, s, m or h) (see demo --help)"
        );
        assert_eq!(
            message(&["demo", "stop", "--job-name", "j", "--bogus"]),
            "unexpected argument '--bogus' (see demo --help)"
        );
        let help = parse::<Demo>(vec!["demo".into(), "--help".into()], "demo x");
        match help {
            Err(Fatal::Shown(text)) => assert!(text.contains("Usage: demo x"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
