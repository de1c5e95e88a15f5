//! The operator's side of the control socket (SPEC sections 6 and 10):
//! `ctl`, `bpm`, `monit` and `probe` share one way to parse their command
//! lines, find container-runs (`reach`), send a command to each and wait,
//! on all of them at once, until each has reached the state asked for
//! (`session`), believing only answers whose sender they trust.

pub mod bpm;
pub mod ctl;
mod line;
pub mod monit;
pub mod probe;
pub mod reach;
pub mod session;

pub use crate::cli::TrustArgs;
pub use session::{ANSWER_TIMEOUT, Drive};

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::datagram;
use crate::error::Fatal;
use crate::exit;
use crate::paths::Paths;
use crate::protocol::{ControlCommand, State, Status};

/// One container-run to talk to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `JOB/PROCESS` when known, else the socket path, escaped for a
    /// person's eyes.
    pub label: String,
    /// Every file of that job process, when it was named.
    pub paths: Option<Paths>,
    /// Given by `--socket`: messages need not repeat the path.
    pub by_socket: bool,
    pub reach: reach::Reach,
}

impl Target {
    /// JOB [PROCESS] under `base`, found at its rendezvous names in
    /// `names` (none when they cannot be listed: then by its socket's name).
    pub fn named(
        base: &Path,
        job: &str,
        process: Option<&str>,
        names: Option<&reach::PodNames>,
    ) -> Result<Target, Fatal> {
        let paths = Paths::new(&crate::cli::absolute(base)?, job, process.unwrap_or(job))?;
        Ok(Target {
            label: escape(&format!("{}/{}", paths.job, paths.process)),
            reach: reach::named(&paths, names),
            paths: Some(paths),
            by_socket: false,
        })
    }

    pub fn at_socket(path: &Path) -> Target {
        Target {
            label: escape(&path.display().to_string()),
            paths: None,
            by_socket: true,
            reach: reach::at_socket(path),
        }
    }

    /// A rendezvous name found in a listing, before it has said who it is;
    /// `paths` when a socket file of the pod names it.
    fn listed(name: &[u8], paths: Option<&Paths>) -> Target {
        let place = reach::Place::Abstract(name.to_vec());
        Target {
            label: paths.map_or_else(
                || place.shown(),
                |p| escape(&format!("{}/{}", p.job, p.process)),
            ),
            paths: paths.cloned(),
            by_socket: false,
            reach: reach::Reach::At(vec![place]),
        }
    }

    /// A socket file without a rendezvous name: asked at its path.
    fn left_behind(paths: &Paths) -> Target {
        Target {
            label: escape(&format!("{}/{}", paths.job, paths.process)),
            reach: reach::named(paths, None),
            paths: Some(paths.clone()),
            by_socket: false,
        }
    }
}

/// Text from a socket's name or an answer as a person may read it: control
/// characters (a terminal's escape sequences, a newline that would forge a
/// row) are written as `\xNN`, backslashes doubled.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One container-run of the pod as a listing shows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub job: String,
    pub process: String,
    pub target: Target,
    pub outcome: Outcome,
    /// Only a socket file is left: its container-run was killed outright.
    pub gone: bool,
}

/// Every container-run of the pod: each rendezvous name is asked for its
/// STATUS and shown under the JOB/PROCESS it answers with, when the answer
/// is believed, or, when it does not answer, under the JOB/PROCESS of the
/// socket file it left (`reach::owner_of`). Socket files without a
/// rendezvous name (a container-run killed outright, or one that hangs)
/// are asked at their path and shown under their names. A name that
/// neither answers nor can be named is said on stderr, never shown as a
/// job. `Ok` with the members, sorted by JOB then PROCESS, and how many
/// names went unaccounted for.
pub fn pod(base: &Path, trust: datagram::Trust) -> Result<(Vec<Member>, usize), Fatal> {
    let base = crate::cli::absolute(base)?;
    let names = reach::pod_names(&base, &trust)?;
    if names.listing.truncated {
        crate::error::report(format!(
            "more than {} names look like container-runs of this pod: only the first are asked",
            crate::rendezvous::MAX_LISTED
        ));
    }
    let files = reach::socket_files(&base, &trust);
    let mut targets: Vec<(Target, bool)> = names
        .listing
        .names
        .iter()
        .map(|n| (Target::listed(n, reach::owner_of(n, &names, &files)), true))
        .collect();
    for paths in &files {
        if !names
            .listing
            .contains_prefix(&names.pod.prefix_for(&paths.job, &paths.process))
        {
            targets.push((Target::left_behind(paths), false));
        }
    }
    let outcomes = Drive {
        commands: &[ControlCommand::Status],
        goal: Goal::Ack,
        timeout: ANSWER_TIMEOUT,
        trust,
        interrupt: None,
    }
    .run(&targets.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>());
    let mut members: Vec<Member> = Vec::new();
    let mut unaccounted = 0;
    for ((target, listed), outcome) in targets.into_iter().zip(outcomes) {
        match member(&base, target, outcome, listed) {
            Ok(m) => add_member(&mut members, m),
            Err(line) => {
                crate::error::report(line);
                unaccounted += 1;
            }
        }
    }
    members.sort_by(|a, b| (&a.job, &a.process).cmp(&(&b.job, &b.process)));
    Ok((members, unaccounted))
}

/// One row per JOB/PROCESS: an answer wins over a silence.
fn add_member(members: &mut Vec<Member>, m: Member) {
    match members
        .iter_mut()
        .find(|o| (&o.job, &o.process) == (&m.job, &m.process))
    {
        Some(old) if !matches!(old.outcome, Outcome::Done(_)) => *old = m,
        Some(_) => {}
        None => members.push(m),
    }
}

/// A target of the pod's listing as a member, or the error line that says
/// why a listed name is none.
fn member(
    base: &Path,
    mut target: Target,
    outcome: Outcome,
    listed: bool,
) -> Result<Member, String> {
    // A silence keeps the row of a name the pod's files tell; a refusal
    // (no right to ask) or another failure is said, never shown as a job.
    let (job, process) = match (&outcome, &target.paths) {
        (Outcome::Done(s), _) => (s.job.clone(), s.process.clone()),
        (Outcome::NoAnswer(_) | Outcome::TimedOut(_), Some(paths)) => {
            (paths.job.clone(), paths.process.clone())
        }
        _ => return Err(format!("{}: {}", target.label, outcome_words(&outcome))),
    };
    let gone = !listed && matches!(target.reach, reach::Reach::Nowhere(Outcome::NoAnswer(_)));
    target.label = escape(&format!("{job}/{process}"));
    if target.paths.is_none() {
        target.paths = Paths::new(base, &job, &process).ok();
    }
    Ok(Member {
        gone,
        job,
        process,
        target,
        outcome,
    })
}

/// An outcome's words for an error line.
pub fn outcome_words(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done(s) => s.state.as_str().to_string(),
        Outcome::TimedOut(_) => "no answer in time".to_string(),
        Outcome::NoAnswer(why) | Outcome::Failed(why) => why.clone(),
        Outcome::Interrupted { .. } => "interrupted".to_string(),
    }
}

/// `BASE/<link>` -> `BASE`: a compatibility command invoked through the link
/// container-run installs (`jobs/bpm/bin/bpm`, `bosh/bin/monit`) works under
/// any base directory without configuration. A relative invocation from
/// inside BASE gives `.`.
pub fn base_from_link(invoked: &Path, link: &str) -> Option<PathBuf> {
    let mut base = invoked;
    for want in Path::new(link).components().rev() {
        if base.file_name()? != want.as_os_str() {
            return None;
        }
        base = base.parent()?;
    }
    Some(if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.to_path_buf()
    })
}

/// Go's `text/tabwriter` as bpm configures it (and `ctl status` with padding 2) (minwidth 0, tabwidth 0,
/// padchar ' ', no flags) for rows of equal length: every cell but the last
/// of a row is padded to its column's widest cell plus `padding`; the last
/// cell is written as it is. Widths count characters, as Go counts runes.
pub fn tabwrite<R: AsRef<[String]>>(rows: &[R], padding: usize) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns.saturating_sub(1))
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count() + padding)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let row = row.as_ref();
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// `--base-dir` of the compatibility commands (`bpm`, `monit`): without it
/// (and without `CONTAINER_RUN_BASE_DIR`), BASE comes from the path of the
/// link they were invoked through, else `/var/vcap`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkedBaseDir {
    /// Root of the sockets [default: from the path invoked when it is
    /// BASE/jobs/bpm/bin/bpm or BASE/bosh/bin/monit, else /var/vcap].
    #[arg(
        long = "base-dir",
        value_name = "DIR",
        env = "CONTAINER_RUN_BASE_DIR",
        global = true
    )]
    pub base_dir: Option<PathBuf>,
}

impl LinkedBaseDir {
    pub fn resolve(&self, invoked: &Path, link: &str) -> PathBuf {
        self.base_dir
            .clone()
            .or_else(|| base_from_link(invoked, link))
            .unwrap_or_else(|| PathBuf::from("/var/vcap"))
    }
}

/// The job's main process is alive: running, draining, or stopping before
/// it has exited. What `monit` and `bpm list` call running.
pub fn main_process_lives(s: &Status) -> bool {
    s.state.is_up() || (s.state == State::Stopping && s.pid.is_some())
}

/// What a command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Any reply: the command was received.
    Ack,
    /// The state, with no start pending.
    Reach(State),
    /// Running again after a stop: more starts than the first reply showed.
    Restarted,
    /// The job's process of the first answer no longer runs (what a QUIT
    /// did).
    JobEnds,
}

impl Goal {
    /// Whether `status` is what was waited for; `first` is the first reply.
    pub fn reached(self, status: &Status, first: Option<&Status>) -> bool {
        match self {
            Goal::Ack => true,
            // Every client counts a draining job as running (SPEC 8).
            Goal::Reach(State::Running) => status.state.is_up() && !status.pending_start,
            Goal::Reach(state) => {
                (status.state == state && !status.pending_start)
                    || (state == State::Stopped && job_gone_drain_finishing(status))
            }
            Goal::Restarted => {
                status.state.is_up()
                    && !status.pending_start
                    && first.is_some_and(|f| status.starts > f.starts)
            }
            Goal::JobEnds => !main_process_lives(status) || status.pid != first.and_then(|f| f.pid),
        }
    }
}

/// The job's process is gone and what is left is a drain script that
/// container-run lets finish (a TERM during the drain, SPEC section 8): a
/// drain script's own `bpm stop JOB` must not wait for itself to end.
fn job_gone_drain_finishing(s: &Status) -> bool {
    s.state == State::Stopping && s.pid.is_none() && s.drain == crate::protocol::Drain::Running
}

/// How one target ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Status),
    /// The command was received (a reply came back: the last one is here),
    /// but the state asked for was not reached in time.
    TimedOut(Option<Status>),
    NoAnswer(String),
    Failed(String),
    /// Ctrl-C ended the wait; `sent` says whether the commands went out,
    /// `last` is the last reply.
    Interrupted {
        sent: bool,
        last: Option<Status>,
    },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Done(_) => exit::OK,
            Outcome::TimedOut(_) | Outcome::Failed(_) => exit::FAILURE,
            Outcome::NoAnswer(_) => exit::NO_ANSWER,
            Outcome::Interrupted { .. } => exit::INTERRUPTED,
        }
    }
}

/// The worst exit code of several outcomes: no answer (3) over failure (1).
pub fn combined_exit(outcomes: &[Outcome]) -> u8 {
    outcomes.iter().map(Outcome::exit_code).max().unwrap_or(0)
}

/// What a waiting client knows of one target, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub target: &'a Target,
    /// The last reply, if any came.
    pub last: Option<&'a Status>,
    /// The target has an outcome: nothing more to wait for.
    pub done: bool,
}

/// One target, asked for its status.
pub fn query(target: &Target, trust: datagram::Trust) -> Outcome {
    Drive {
        commands: &[ControlCommand::Status],
        goal: Goal::Ack,
        timeout: ANSWER_TIMEOUT,
        trust,
        interrupt: None,
    }
    .run(std::slice::from_ref(target))
    .remove(0)
}

/// A duration as an operator writes it: `0s`, `200ms`, `30s`, `1m30s`, `2h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            // Integer arithmetic: float formatting would cost the static
            // binary several kilobytes for one digit.
            format!("{}.{}s", ms / 1000, ms % 1000 / 100)
        };
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }
}
