//! `bpm logs JOB` (SPEC section 11): the last lines of the job's log
//! files, followed with `-f`, in tail's layout (bpm ran tail). Keeps: the
//! files are reached as the logs mode reaches them, through directory fds
//! without following a link, opened without blocking on a FIFO.

use std::ffi::OsString;
use std::path::Path;

use super::Stream;
use super::out::Style;
use super::tree::{Options, Select, Start};
use crate::error::Fatal;

/// bpm's own flags of `logs`; refused with any other verb.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BpmLogsFlags {
    /// logs: PROCESS.stderr.log instead of PROCESS.stdout.log.
    #[arg(short = 'e', long = "err")]
    pub err: bool,
    /// logs: every *.log of the job, each under its name.
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// logs: how many last lines [default: 25].
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// logs: go on printing what is appended.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
}

impl BpmLogsFlags {
    /// A usage error when a flag of `logs` came with another verb.
    pub fn only_with_logs(&self) -> Result<(), Fatal> {
        if self.err || self.all || self.lines.is_some() || self.follow {
            return Err(Fatal::Usage(
                "-e, -a, -n and -f are flags of logs only (see --help)".into(),
            ));
        }
        Ok(())
    }
}

/// `bpm logs JOB [-p PROCESS]`: JOB and PROCESS are validated names.
pub fn bpm_logs(base: &Path, job: &str, process: &str, flags: &BpmLogsFlags) -> Result<u8, Fatal> {
    let root = Path::new("sys/log").join(job);
    let stream = if flags.err { "stderr" } else { "stdout" };
    let name = OsString::from(format!("{process}.{stream}.log"));
    let opts = Options {
        root: root.clone(),
        depth: 0,
        select: if flags.all {
            Select::AllLogs
        } else {
            Select::Names(vec![name.clone()])
        },
        start: Start::LastLines(flags.lines.unwrap_or(25)),
        create: false,
    };
    let mut stream = Stream::open(base, opts, Style::Tail { headers: flags.all })?;
    if !flags.all && !stream.tree.has(&name) {
        return Err(Fatal::Setup(format!(
            "{}: no such log file (or not a regular file)",
            base.join(root).join(name).display()
        )));
    }
    stream.follow = flags.follow;
    stream.run()
}
