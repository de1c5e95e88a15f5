//! `container-run probe`: a liveness-probe wrapper that does not fight the
//! operator (SPEC section 6). While an operator's STOP is in force the job
//! is down on purpose, so the probe passes without running CHECK; otherwise
//! CHECK decides.

use std::ffi::OsString;
use std::process::Command;

use clap::Parser;

use super::{Outcome, Target, TrustArgs, query};
use crate::cli::parse;
use crate::error::{Fatal, report};

#[derive(Debug, Parser)]
#[command(
    name = "container-run probe",
    version = crate::VERSION,
    about = "Liveness probe: pass while an operator's STOP is in force, else run CHECK",
    after_help = "Exit codes: CHECK's status (128+signal if killed); 0 during an operator's \
                  STOP; 1 when no container-run answers; 126/127 when CHECK cannot run."
)]
pub struct ProbeArgs {
    /// The job.
    #[arg(value_name = "JOB")]
    pub job: String,
    /// The process of the job [default: JOB].
    #[arg(short = 'p', long = "process", value_name = "PROCESS")]
    pub process: Option<String>,
    #[command(flatten)]
    pub base: crate::cli::BaseDir,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The liveness check and its arguments.
    #[arg(value_name = "CHECK", required = true, last = true)]
    pub check: Vec<OsString>,
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let args: ProbeArgs = parse(args, "container-run probe")?;
    let base = crate::cli::absolute(&args.base.base_dir)?;
    let names = super::reach::pod_names(&base, &args.trust.trust()).ok();
    let target = Target::named(&base, &args.job, args.process.as_deref(), names.as_ref())?;
    match query(&target, args.trust.trust()) {
        Outcome::Done(status) if status.hold => Ok(crate::exit::OK),
        Outcome::Done(_) => Ok(run_check(&args.check)),
        other => {
            report(format!(
                "{}: {}",
                target.label,
                super::outcome_words(&other)
            ));
            Ok(crate::exit::FAILURE)
        }
    }
}

fn run_check(check: &[OsString]) -> u8 {
    use crate::exit;
    use crate::exit::Exit;
    use std::os::unix::process::ExitStatusExt;
    match Command::new(&check[0]).args(&check[1..]).status() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => exit::from_wait(Exit::Code(code as u8)),
            (None, Some(sig)) => exit::from_wait(Exit::Signal(sig as u8)),
            _ => exit::FAILURE,
        },
        Err(e) => {
            let (code, what) = exit::from_spawn_error(&e);
            report(format!("{}: {what}", check[0].to_string_lossy()));
            code
        }
    }
}
