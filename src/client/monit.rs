//! The `monit` command (SPEC section 10): monit 5.2.5's `summary` and
//! `status` texts, byte for byte, over every container-run of the pod, and
//! its control verbs mapped onto the socket's commands. Every socket is
//! asked at once; nothing here waits for a state, as monit did not.

use std::ffi::OsString;
use std::path::Path;

use clap::{Parser, Subcommand};

use super::{ANSWER_TIMEOUT, Drive, Goal, Member, Outcome, Target, TrustArgs, main_process_lives};
use crate::cli::{help_word_to_flag, parse};
use crate::datagram::Trust;
use crate::error::Fatal;
use crate::protocol::{ControlCommand, State};

/// Where container-run installs this command, relative to BASE (SPEC 2).
pub const LINK: &str = "bosh/bin/monit";

/// The monit version whose layout BOSH's scripts parse.
const VERSION: &str = "5.2.5";

#[derive(Debug, Parser)]
#[command(
    name = "monit",
    version = crate::VERSION,
    about = "monit 5.2.5's commands over the container-runs of the pod",
    after_help = "NAME is a PROCESS, or JOB/PROCESS when two jobs share a process name; \
                  `all` is every container-run under BASE/data.\n\
                  Exit codes: 0 done; 1 no service by that name, an ambiguous name, or a \
                  container-run that did not answer within 2 s; 2 usage."
)]
pub struct MonitArgs {
    #[command(subcommand)]
    pub action: Action,

    #[command(flatten)]
    pub base: super::LinkedBaseDir,

    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Action {
    /// One line per process (monit 5.2.5's layout).
    Summary {
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// One block per process: status, monitoring status, pid, uptime.
    Status {
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// START: start, and lift an operator's hold.
    Start {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// STOP: stop and hold stopped, across container restarts.
    Stop {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// TERM then START: stop without a hold and start again.
    Restart {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Accepted, no effect: container-run never restarts a job by itself.
    Monitor {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Accepted, no effect: container-run never restarts a job by itself.
    Unmonitor {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

pub fn main(args: Vec<OsString>) -> Result<u8, Fatal> {
    let invoked_as = args.first().cloned().unwrap_or_default();
    let args: MonitArgs = parse(help_word_to_flag(args), &crate::cli::mode_bin_name("monit"))?;
    let base = args.base.resolve(Path::new(&invoked_as), LINK);
    let trust = args.trust.trust();
    let (members, unanswered) = super::pod(&base, trust)?;
    let pod = Pod::new(members);
    let result = match &args.action {
        Action::Summary { name } => show(&pod, name.as_deref(), Layout::Summary),
        Action::Status { name } => show(&pod, name.as_deref(), Layout::Status),
        Action::Start { name } => control(&pod, name, &[ControlCommand::Start], trust),
        Action::Stop { name } => control(&pod, name, &[ControlCommand::Stop], trust),
        Action::Restart { name } => control(
            &pod,
            name,
            &[ControlCommand::Term, ControlCommand::Start],
            trust,
        ),
        Action::Monitor { name } | Action::Unmonitor { name } => control(&pod, name, &[], trust),
    };
    let code = result.unwrap_or_else(|err| {
        eprintln!("monit: {err}");
        crate::exit::FAILURE
    });
    // A listed name that did not answer was said on stderr: not a success.
    Ok(if unanswered > 0 {
        code.max(crate::exit::FAILURE)
    } else {
        code
    })
}

/// The container-runs of the pod in monit's order: by JOB, then PROCESS.
struct Pod {
    services: Vec<Service>,
}

struct Service {
    job: String,
    process: String,
    target: Target,
    /// What the pod's listing learnt of it.
    outcome: Outcome,
}

/// Why a NAME selects nothing.
#[derive(Debug, PartialEq, Eq)]
enum NameError {
    Unknown,
    Ambiguous(String, Vec<String>),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // monit's own words, which scripts may match.
            NameError::Unknown => write!(f, "There is no service by that name"),
            NameError::Ambiguous(name, labels) => write!(
                f,
                "'{name}' is ambiguous: use JOB/PROCESS ({})",
                labels.join(", ")
            ),
        }
    }
}

impl Pod {
    fn new(members: Vec<Member>) -> Pod {
        let mut services: Vec<Service> = members
            .into_iter()
            .map(|m| Service {
                job: m.job,
                process: m.process,
                target: m.target,
                outcome: m.outcome,
            })
            .collect();
        // By JOB then PROCESS, not by "JOB/PROCESS": `a-b` sorts after `a`.
        services.sort_by(|a, b| (&a.job, &a.process).cmp(&(&b.job, &b.process)));
        Pod { services }
    }

    /// Indices of the services NAME selects: `all`, a PROCESS, or
    /// `JOB/PROCESS`.
    fn select(&self, name: &str) -> Result<Vec<usize>, NameError> {
        if name == "all" {
            return Ok((0..self.services.len()).collect());
        }
        let hits: Vec<usize> = match name.split_once('/') {
            Some((job, process)) => self
                .services
                .iter()
                .position(|s| s.job == job && s.process == process)
                .into_iter()
                .collect(),
            None => (0..self.services.len())
                .filter(|&i| self.services[i].process == name)
                .collect(),
        };
        match hits.len() {
            0 => Err(NameError::Unknown),
            1 => Ok(hits),
            _ => Err(NameError::Ambiguous(
                name.to_string(),
                hits.iter()
                    .map(|&i| self.services[i].target.label.clone())
                    .collect(),
            )),
        }
    }

    /// The name a row shows: PROCESS, or JOB/PROCESS where the process name
    /// alone would not select it.
    fn display_name(&self, i: usize) -> String {
        let s = &self.services[i];
        let shared = self
            .services
            .iter()
            .filter(|o| o.process == s.process)
            .count()
            > 1;
        if shared {
            s.target.label.clone()
        } else {
            super::escape(&s.process)
        }
    }

    fn targets(&self, chosen: &[usize]) -> Vec<Target> {
        chosen
            .iter()
            .map(|&i| self.services[i].target.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Summary,
    Status,
}

/// `summary` and `status`: every socket is asked (the header's uptime is
/// the oldest container-run's age), the rows NAME selects are printed.
fn show(pod: &Pod, name: Option<&str>, layout: Layout) -> Result<u8, NameError> {
    let chosen = match name {
        Some(name) => pod.select(name)?,
        None => (0..pod.services.len()).collect(),
    };
    let whole = matches!(name, None | Some("all"));
    let outcomes: Vec<&Outcome> = pod.services.iter().map(|s| &s.outcome).collect();
    let age_ms = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Done(s) => Some(s.age_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut text = header(age_ms / 1000);
    let collected = match layout {
        Layout::Status => ctime_now(),
        Layout::Summary => String::new(),
    };
    for &i in &chosen {
        if let Outcome::Failed(why) = outcomes[i] {
            eprintln!("monit: {}: {why}", pod.services[i].target.label);
        }
        let view = View::of(outcomes[i]);
        let name = pod.display_name(i);
        text.push_str(&match layout {
            Layout::Summary => summary_row("Process", &name, view.status),
            Layout::Status => status_block(&name, &view, &collected),
        });
    }
    if whole {
        let system = format!("system_{}", hostname());
        text.push_str(&match layout {
            Layout::Summary => summary_row("System", &system, "running"),
            Layout::Status => system_block(&system, &collected),
        });
    }
    print!("{text}");
    Ok(crate::exit::OK)
}

/// `start`, `stop`, `restart` (and `monitor`/`unmonitor`, which send
/// nothing): return once every container-run concerned has answered.
fn control(
    pod: &Pod,
    name: &str,
    commands: &[ControlCommand],
    trust: Trust,
) -> Result<u8, NameError> {
    let chosen = pod.select(name)?;
    if commands.is_empty() {
        return Ok(crate::exit::OK);
    }
    let targets = pod.targets(&chosen);
    let outcomes = Drive {
        commands,
        goal: Goal::Ack,
        timeout: ANSWER_TIMEOUT,
        trust,
        interrupt: None,
    }
    .run(&targets);
    let mut code = 0;
    for (target, outcome) in targets.iter().zip(&outcomes) {
        match outcome {
            Outcome::Done(_) => {}
            Outcome::NoAnswer(why) | Outcome::Failed(why) => {
                eprintln!("monit: {}: {why}", target.label);
                code = 1;
            }
            Outcome::TimedOut(_) | Outcome::Interrupted { .. } => {
                eprintln!("monit: {}: no answer within 2 s", target.label);
                code = 1;
            }
        }
    }
    Ok(code)
}

/// One process as monit would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    status: &'static str,
    monitored: bool,
    /// Pid and uptime (seconds) while the main process lives.
    running: Option<(i32, u64)>,
}

impl View {
    fn of(outcome: &Outcome) -> View {
        let Outcome::Done(s) = outcome else {
            // monit's word for a monitored process it cannot find.
            return View {
                status: "Does not exist",
                monitored: true,
                running: None,
            };
        };
        let not_monitored = |status| View {
            status,
            monitored: false,
            running: None,
        };
        // A restart in progress says so even while the old process is
        // still on its way out, so that a script waiting for `running`
        // after `monit restart` does not see the old process.
        if s.pending_start {
            return not_monitored("not monitored - start pending");
        }
        if main_process_lives(s) {
            return View {
                status: "running",
                monitored: true,
                running: s.pid.map(|pid| (pid, s.uptime_ms.unwrap_or(0) / 1000)),
            };
        }
        match s.state {
            State::Stopping => not_monitored("not monitored - stop pending"),
            _ => not_monitored("not monitored"),
        }
    }
}

/// monit's uptime text (`Util_getUptime` with a space separator): days only
/// when there are any, hours once there are hours or days, minutes always,
/// each followed by a space.
pub fn uptime_text(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    let mut text = String::new();
    if days > 0 {
        text.push_str(&format!("{days}d "));
    }
    if days > 0 || hours > 0 {
        text.push_str(&format!("{hours}h "));
    }
    text.push_str(&format!("{minutes}m "));
    text
}

fn header(age_secs: u64) -> String {
    format!(
        "The Monit daemon {VERSION} uptime: {}\n\n",
        uptime_text(age_secs)
    )
}

/// C's `"%-35s %s\n"` over `"KIND 'NAME'"`: printf pads by bytes.
fn summary_row(kind: &str, name: &str, status: &str) -> String {
    let prefix = format!("{kind} '{name}'");
    let pad = 35usize.saturating_sub(prefix.len());
    format!("{prefix}{} {status}\n", " ".repeat(pad))
}

/// C's `"  %-33s %s\n"`.
fn field(key: &str, value: &str) -> String {
    format!("  {key:<33} {value}\n")
}

/// monit 5.2.5's block: status and monitoring status, pid and uptime while
/// running, the time the data was collected; its `ctime` text ends with a
/// newline, which leaves the blank line after every block.
fn status_block(name: &str, view: &View, collected: &str) -> String {
    let mut block = format!("Process '{name}'\n");
    block.push_str(&field("status", view.status));
    block.push_str(&field(
        "monitoring status",
        if view.monitored {
            "monitored"
        } else {
            "not monitored"
        },
    ));
    if let Some((pid, uptime)) = view.running {
        block.push_str(&field("pid", &pid.to_string()));
        block.push_str(&field("uptime", &uptime_text(uptime)));
    }
    block.push_str(&field("data collected", collected));
    block.push('\n');
    block
}

fn system_block(name: &str, collected: &str) -> String {
    let mut block = format!("System '{name}'\n");
    block.push_str(&field("status", "running"));
    block.push_str(&field("monitoring status", "monitored"));
    block.push_str(&field("data collected", collected));
    block.push('\n');
    block
}

/// The host name monit names its system service after (`system_HOSTNAME`);
/// in a pod, the pod's name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Now as C's `ctime` prints it in local time, without its newline:
/// `Thu Nov 26 09:46:51 2026`.
fn ctime_now() -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) only returns the time; localtime_r writes only
    // into `tm`, which is a plain C struct for which all-zero is valid.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::new();
        }
        tm
    };
    let day = DAYS.get(tm.tm_wday as usize).copied().unwrap_or("???");
    let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("???");
    format!(
        "{day} {month} {:>2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::base_from_link;
    use crate::protocol::{Drain, PostStart, Status};
    use std::path::PathBuf;

    #[test]
    fn uptime_is_monits_text() {
        assert_eq!(uptime_text(0), "0m ");
        assert_eq!(uptime_text(59), "0m ");
        assert_eq!(uptime_text(61), "1m ");
        assert_eq!(uptime_text(3_600 + 2 * 60 + 59), "1h 2m ");
        assert_eq!(uptime_text(3_600), "1h 0m ");
        assert_eq!(uptime_text(86_400 + 5 * 60), "1d 0h 5m ");
        assert_eq!(
            uptime_text(3 * 86_400 + 23 * 3_600 + 59 * 60),
            "3d 23h 59m "
        );
    }

    #[test]
    fn summary_rows_are_printf_padded() {
        assert_eq!(header(3_720), "The Monit daemon 5.2.5 uptime: 1h 2m \n\n");
        assert_eq!(
            summary_row("Process", "nats", "running"),
            format!("Process 'nats'{} running\n", " ".repeat(35 - 14))
        );
        // Longer than the field: no padding, one space.
        let long = "p".repeat(40);
        assert_eq!(
            summary_row("Process", &long, "not monitored"),
            format!("Process '{long}' not monitored\n")
        );
        assert_eq!(
            field("monitoring status", "monitored"),
            "  monitoring status                 monitored\n"
        );
    }

    fn status(state: State, pid: Option<i32>, pending_start: bool) -> Outcome {
        Outcome::Done(Status {
            state,
            pid,
            job: "j".into(),
            process: "p".into(),
            starts: 1,
            hold: false,
            pending_start,
            exiting: false,
            post_start: PostStart::None,
            uptime_ms: pid.map(|_| 125_000),
            last_exit: None,
            drain: Drain::None,
            drain_left_ms: None,
            stop_left_ms: None,
            age_ms: 0,
        })
    }

    #[test]
    fn statuses_follow_the_main_process() {
        let cases = [
            (status(State::Running, Some(7), false), "running", true),
            (status(State::Draining, Some(7), false), "running", true),
            (status(State::Stopping, Some(7), false), "running", true),
            (
                status(State::Stopping, None, false),
                "not monitored - stop pending",
                false,
            ),
            (
                status(State::Stopping, Some(7), true),
                "not monitored - start pending",
                false,
            ),
            (
                status(State::Stopping, None, true),
                "not monitored - start pending",
                false,
            ),
            (status(State::Stopped, None, false), "not monitored", false),
            (Outcome::NoAnswer("x".into()), "Does not exist", true),
            (Outcome::Failed("x".into()), "Does not exist", true),
        ];
        for (outcome, want, monitored) in cases {
            let v = View::of(&outcome);
            assert_eq!((v.status, v.monitored), (want, monitored), "{outcome:?}");
        }
        let v = View::of(&status(State::Running, Some(7), false));
        assert_eq!(v.running, Some((7, 125)));
        let block = status_block("p", &v, "Thu Nov 26 09:46:51 2026");
        assert_eq!(
            block,
            "Process 'p'\n\
             \x20 status                            running\n\
             \x20 monitoring status                 monitored\n\
             \x20 pid                               7\n\
             \x20 uptime                            2m \n\
             \x20 data collected                    Thu Nov 26 09:46:51 2026\n\
             \n"
        );
    }

    fn pod(labels: &[&str]) -> Pod {
        Pod::new(
            labels
                .iter()
                .map(|l| {
                    let (job, process) = l.split_once('/').unwrap();
                    Member {
                        job: job.into(),
                        process: process.into(),
                        target: Target::at_socket(std::path::Path::new(l)),
                        outcome: Outcome::NoAnswer(String::new()),
                        gone: false,
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn names_select_a_process_a_job_process_or_all() {
        let p = pod(&["web/nginx", "a/worker", "a-b/x", "b/worker"]);
        let order: Vec<&str> = p.services.iter().map(|s| s.target.label.as_str()).collect();
        assert_eq!(order, ["a/worker", "a-b/x", "b/worker", "web/nginx"]);
        assert_eq!(p.select("nginx"), Ok(vec![3]));
        assert_eq!(p.select("web/nginx"), Ok(vec![3]));
        assert_eq!(p.select("b/worker"), Ok(vec![2]));
        assert_eq!(p.select("all"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(p.select("nope"), Err(NameError::Unknown));
        assert_eq!(p.select("web/worker"), Err(NameError::Unknown));
        let err = p.select("worker").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'worker' is ambiguous: use JOB/PROCESS (a/worker, b/worker)"
        );
        assert_eq!(p.display_name(0), "a/worker");
        assert_eq!(p.display_name(3), "nginx");
    }

    #[test]
    fn verbs_and_usage() {
        let a = MonitArgs::try_parse_from(["monit", "summary"]).unwrap();
        assert_eq!(a.action, Action::Summary { name: None });
        let a = MonitArgs::try_parse_from(["monit", "stop", "all", "--base-dir", "/b"]).unwrap();
        assert_eq!(a.action, Action::Stop { name: "all".into() });
        assert_eq!(a.base.base_dir, Some(PathBuf::from("/b")));
        assert!(MonitArgs::try_parse_from(["monit", "reload"]).is_err());
        assert!(MonitArgs::try_parse_from(["monit", "start"]).is_err());
        assert!(MonitArgs::try_parse_from(["monit"]).is_err());
        assert_eq!(
            base_from_link(Path::new("/var/vcap/bosh/bin/monit"), LINK),
            Some(PathBuf::from("/var/vcap"))
        );
        assert_eq!(base_from_link(Path::new("/usr/bin/monit"), LINK), None);
        assert_eq!(base_from_link(Path::new("monit"), LINK), None);
    }
}
