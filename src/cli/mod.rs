//! The command line of the supervisor (SPEC section 1): clap definitions, and
//! the step from raw flags to a validated `RunConfig`. Nothing is created or
//! started before this step has accepted every flag, name and path.

use std::ffi::{OsStr, OsString};

use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::error::Fatal;
use crate::paths::Paths;

mod usage;
mod values;

pub use usage::{help_word_to_flag, mode_bin_name, parse, usage_error};
pub use values::{
    MAX_DURATION, is_close, parse_duration, parse_mode, parse_stop_signal, resolve_group,
};

/// Shown under `--help`: the other modes of the binary and every exit code.
pub const AFTER_HELP: &str = "\
Other modes of the same binary:
  container-run ctl start|stop|term|quit|status|restart|wait TARGET... | --all [--except TARGET]
  container-run bpm start|stop|term|quit|pid|running JOB [-p PROCESS] | list
  container-run monit summary|status|start|stop|restart|monitor|unmonitor [NAME|all]
  container-run probe JOB [-p PROCESS] -- CHECK [ARG...]
  container-run install DIR   (copy this binary to DIR/container-run)
  container-run logs [--rotate-size SIZE] [--keep N]   (stream and rotate BASE/sys/log)
  (each has its own --help, or `container-run help MODE`; invoked as `bpm`
  or `monit`, the binary is that command)

Exit codes:
  0        stopped by SIGTERM/SIGINT, everything ended
  1        container-run could not start (base directory, socket in use),
           or the post-start failed or timed out
  2        usage error (bad flag, name, duration, path too long)
  126      COMMAND is not executable
  127      COMMAND was not found
  N        COMMAND exited with status N (1-255)
  128+S    COMMAND was killed by signal S";

#[derive(Debug, Parser)]
#[command(
    name = "container-run",
    version = crate::VERSION,
    about = "Run one BOSH job process as a container's entrypoint, with a control socket to stop and start it",
    override_usage = "container-run [OPTIONS] --job-name JOB [--process-name PROCESS] [--] COMMAND [ARG...]",
    after_help = AFTER_HELP
)]
pub struct RunArgs {
    /// The BOSH job.
    #[arg(long = "job-name", value_name = "JOB")]
    pub job_name: String,

    /// The process of that job [default: JOB].
    #[arg(long = "process-name", value_name = "PROCESS")]
    pub process_name: Option<String>,

    /// The post-start command, run after every start of the process.
    #[arg(long = "post-start-name", value_name = "CMD")]
    pub post_start_name: Option<OsString>,

    /// One argument of the post-start command; repeatable, kept in order.
    #[arg(
        long = "post-start-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub post_start_args: Vec<OsString>,

    /// A command that must exit 0 before the post-start runs.
    #[arg(long = "post-start-condition-name", value_name = "CMD")]
    pub condition_name: Option<OsString>,

    /// One argument of the condition command; repeatable, kept in order.
    #[arg(
        long = "post-start-condition-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub condition_args: Vec<OsString>,

    /// Debug logging.
    #[arg(long)]
    pub debug: bool,

    #[command(flatten)]
    pub base: BaseDir,

    /// Time between SIGTERM and SIGKILL when stopping.
    #[arg(
        long = "stop-timeout",
        value_name = "DURATION",
        env = "CONTAINER_RUN_STOP_TIMEOUT",
        default_value = "20s",
        value_parser = parse_duration
    )]
    pub stop_timeout: Duration,

    /// Bound on the condition loop and the post-start together.
    #[arg(
        long = "post-start-timeout",
        value_name = "DURATION",
        env = "CONTAINER_RUN_POST_START_TIMEOUT",
        default_value = "15m",
        value_parser = parse_duration
    )]
    pub post_start_timeout: Duration,

    /// Time between two runs of the post-start condition.
    #[arg(
        long = "condition-interval",
        value_name = "DURATION",
        env = "CONTAINER_RUN_CONDITION_INTERVAL",
        default_value = "3s",
        value_parser = parse_duration
    )]
    pub condition_interval: Duration,

    /// Mode of the control socket, octal; the owner always keeps read and write.
    #[arg(
        long = "socket-mode",
        value_name = "MODE",
        env = "CONTAINER_RUN_SOCKET_MODE",
        default_value = "0660",
        value_parser = parse_mode
    )]
    pub socket_mode: u32,

    /// Group of the control socket (name or number), so that operators in
    /// that group can control the job [default: container-run's group].
    #[arg(
        long = "socket-group",
        value_name = "GROUP",
        env = "CONTAINER_RUN_SOCKET_GROUP"
    )]
    pub socket_group: Option<String>,

    /// The job's drain script (path or name on PATH), run by the BOSH
    /// agent's contract on SIGTERM/SIGINT before the job is stopped.
    #[arg(
        long = "drain-name",
        value_name = "CMD",
        env = "CONTAINER_RUN_DRAIN_NAME"
    )]
    pub drain_name: Option<OsString>,

    /// Bound on the drain and the pod-wide barrier together; 0 turns both off.
    #[arg(
        long = "drain-timeout",
        value_name = "DURATION",
        env = "CONTAINER_RUN_DRAIN_TIMEOUT",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub drain_timeout: Duration,

    /// The job is an errand: container-run ends when its process ends, with
    /// its status, 0 included.
    #[arg(long, env = "CONTAINER_RUN_ERRAND")]
    pub errand: bool,

    /// The signal every stop sends first to the job's process group (a name
    /// such as TERM, INT, QUIT, or a number 1-31).
    #[arg(
        long = "stop-signal",
        value_name = "SIG",
        env = "CONTAINER_RUN_STOP_SIGNAL",
        default_value = "TERM",
        value_parser = parse_stop_signal
    )]
    pub stop_signal: Signal,

    /// Also believe this uid's answers at the drain barrier (peers that
    /// run as another user) [believed always: root and container-run's uid].
    #[arg(
        long = "trust-uid",
        value_name = "UID",
        env = "CONTAINER_RUN_TRUST_UID"
    )]
    pub trust_uid: Option<u32>,

    /// The job's command and its arguments.
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// `--base-dir`, as the supervisor, `ctl` and `probe` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct BaseDir {
    /// Root of container-run's files: sockets, sentinels, pidfiles, STOP
    /// markers, and the job logs under sys/log.
    #[arg(
        long = "base-dir",
        value_name = "DIR",
        env = "CONTAINER_RUN_BASE_DIR",
        default_value = "/var/vcap"
    )]
    pub base_dir: PathBuf,
}

/// `--trust-uid`: whose answers a client believes besides root and its
/// own uid (SPEC section 3).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TrustArgs {
    /// Also believe answers from this uid (a container-run that runs as
    /// another user) [believed always: root and this client's own uid].
    #[arg(
        long = "trust-uid",
        value_name = "UID",
        env = "CONTAINER_RUN_TRUST_UID",
        global = true
    )]
    pub trust_uid: Option<u32>,
}

impl TrustArgs {
    pub fn trust(&self) -> crate::datagram::Trust {
        crate::datagram::Trust::new(self.trust_uid)
    }
}

/// The job's command line: a program and its arguments, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCommand(Vec<OsString>);

impl JobCommand {
    pub fn new(argv: Vec<OsString>) -> Option<JobCommand> {
        (!argv.is_empty()).then_some(JobCommand(argv))
    }
    pub fn program(&self) -> &OsStr {
        &self.0[0]
    }
    pub fn args(&self) -> &[OsString] {
        &self.0[1..]
    }
}

/// A command with its arguments, as the post-start and its condition are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Everything the supervisor needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Every file of the job process, and its validated JOB and PROCESS.
    pub paths: Paths,
    pub command: JobCommand,
    pub post_start: Option<HookCommand>,
    pub condition: Option<HookCommand>,
    pub stop_timeout: Duration,
    pub post_start_timeout: Duration,
    pub condition_interval: Duration,
    pub drain: Option<OsString>,
    pub drain_timeout: Duration,
    pub errand: bool,
    pub stop_signal: Signal,
    pub socket_mode: u32,
    pub socket_group: Option<u32>,
    /// Whose answers the barrier believes besides root and its own uid.
    pub trust_uid: Option<u32>,
    pub debug: bool,
}

impl RunArgs {
    pub fn validate(self) -> Result<RunConfig, Fatal> {
        let process = self.process_name.as_deref().unwrap_or(&self.job_name);
        let paths = Paths::new(&absolute(&self.base.base_dir)?, &self.job_name, process)?;
        if self.post_start_name.is_none()
            && (self.condition_name.is_some() || !self.post_start_args.is_empty())
        {
            return Err(Fatal::Usage(
                "--post-start-arg and --post-start-condition-name need --post-start-name".into(),
            ));
        }
        if self.condition_name.is_none() && !self.condition_args.is_empty() {
            return Err(Fatal::Usage(
                "--post-start-condition-arg needs --post-start-condition-name".into(),
            ));
        }
        if self.condition_interval.is_zero() {
            return Err(Fatal::Usage("--condition-interval must be above 0".into()));
        }
        Ok(RunConfig {
            paths,
            command: JobCommand::new(self.command)
                .ok_or_else(|| Fatal::Usage("COMMAND is required".into()))?,
            post_start: self.post_start_name.map(|program| HookCommand {
                program,
                args: self.post_start_args,
            }),
            condition: self.condition_name.map(|program| HookCommand {
                program,
                args: self.condition_args,
            }),
            stop_timeout: self.stop_timeout,
            post_start_timeout: self.post_start_timeout,
            condition_interval: self.condition_interval,
            drain: self.drain_name,
            drain_timeout: self.drain_timeout,
            errand: self.errand,
            stop_signal: self.stop_signal,
            socket_mode: self.socket_mode,
            socket_group: self
                .socket_group
                .as_deref()
                .map(resolve_group)
                .transpose()?,
            trust_uid: self.trust_uid,
            debug: self.debug,
        })
    }
}

pub use crate::paths::validate_name;

/// A relative base directory is taken from the working directory now, so that
/// every path derived from it stays valid whatever the child does later.
pub fn absolute(dir: &Path) -> Result<PathBuf, Fatal> {
    std::path::absolute(dir).map_err(|e| {
        Fatal::Usage(format!(
            "invalid base directory {}: {}",
            dir.display(),
            crate::error::os_phrase(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["nats", "a", "route_registrar", "...", "a.b", "with space"] {
            assert_eq!(validate_name("job", good).unwrap(), good);
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(validate_name("job", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_of_the_go_original_parse() {
        let args = RunArgs::try_parse_from([
            "container-run",
            "--job-name",
            "nats",
            "--process-name",
            "nats-server",
            "--post-start-name",
            "/var/vcap/jobs/nats/bin/post-start",
            "--post-start-arg",
            "-x",
            "--post-start-arg",
            "two",
            "--post-start-condition-name",
            "curl",
            "--post-start-condition-arg",
            "-f",
            "--",
            "/bin/nats",
            "--config",
            "c.yml",
        ])
        .unwrap();
        let cfg = args.validate().unwrap();
        assert_eq!(cfg.paths.job, "nats");
        assert_eq!(cfg.paths.process, "nats-server");
        assert_eq!(cfg.command.program(), "/bin/nats");
        assert_eq!(cfg.command.args(), ["--config", "c.yml"]);
        let ps = cfg.post_start.unwrap();
        assert_eq!(ps.args, ["-x", "two"]);
        assert_eq!(cfg.condition.unwrap().args, ["-f"]);
        assert_eq!(cfg.stop_timeout, Duration::from_secs(20));
        assert_eq!(cfg.post_start_timeout, Duration::from_secs(900));
        assert_eq!(cfg.condition_interval, Duration::from_secs(3));
    }

    #[test]
    fn process_defaults_to_job() {
        let cfg = RunArgs::try_parse_from(["cr", "--job-name", "j", "--base-dir", "/b", "true"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.paths.process, "j");
        assert_eq!(
            cfg.paths.socket,
            Path::new("/b/data/j/j_containerrun.sock").to_path_buf()
        );
    }
}
