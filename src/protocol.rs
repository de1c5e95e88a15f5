//! The control protocol of SPEC section 3, both directions: datagram bytes
//! to a `ControlCommand`, and a `Status` to the one-line JSON reply (pure);
//! the client side parses replies with the same definitions.

use serde::{Deserialize, Serialize};

/// The largest datagram read whole; anything longer is ignored unread.
pub const MAX_DATAGRAM: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    Start,
    Stop,
    Term,
    Quit,
    Status,
}

impl ControlCommand {
    /// One datagram is one command; surrounding ASCII whitespace (the newline
    /// that `echo` adds) is trimmed, and the match is case-sensitive.
    pub fn parse(datagram: &[u8]) -> Option<ControlCommand> {
        match trim_space(datagram) {
            b"START" => Some(ControlCommand::Start),
            b"STOP" => Some(ControlCommand::Stop),
            b"TERM" => Some(ControlCommand::Term),
            b"QUIT" => Some(ControlCommand::Quit),
            b"STATUS" => Some(ControlCommand::Status),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ControlCommand::Start => "START",
            ControlCommand::Stop => "STOP",
            ControlCommand::Term => "TERM",
            ControlCommand::Quit => "QUIT",
            ControlCommand::Status => "STATUS",
        }
    }
}

/// ASCII whitespace as C's isspace() sees it: space, \t, \n, \v, \f, \r.
fn trim_space(bytes: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Running,
    /// Between a SIGTERM and the stop, while a drain or a peer's drain runs
    /// (SPEC section 8); the job still runs and serves.
    Draining,
    Stopping,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Draining => "draining",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    /// Every client treats a draining job as running (SPEC section 8).
    pub fn is_up(self) -> bool {
        matches!(self, State::Running | State::Draining)
    }
}

/// Where the post-start of the current (or last) start stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostStart {
    /// No `--post-start-name` given.
    None,
    /// Waiting for the condition to pass.
    Pending,
    Running,
    Done,
    Failed,
    /// The post-start command does not exist.
    Skipped,
    /// A stop ended it before it finished.
    Cancelled,
}

impl PostStart {
    pub fn as_str(self) -> &'static str {
        match self {
            PostStart::None => "none",
            PostStart::Pending => "pending",
            PostStart::Running => "running",
            PostStart::Done => "done",
            PostStart::Failed => "failed",
            PostStart::Skipped => "skipped",
            PostStart::Cancelled => "cancelled",
        }
    }
}

/// Where the drain stands (SPEC section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drain {
    /// No `--drain-name` (or `--drain-timeout 0`).
    None,
    /// Configured, not started.
    Ready,
    /// The script or one of its waits.
    Running,
    /// At the pod-wide barrier.
    Waiting,
    Done,
    Failed,
    TimedOut,
    Skipped,
    /// Ended by STOP or by the job's exit.
    Cancelled,
}

impl Drain {
    pub fn as_str(self) -> &'static str {
        match self {
            Drain::None => "none",
            Drain::Ready => "ready",
            Drain::Running => "running",
            Drain::Waiting => "waiting",
            Drain::Done => "done",
            Drain::Failed => "failed",
            Drain::TimedOut => "timed-out",
            Drain::Skipped => "skipped",
            Drain::Cancelled => "cancelled",
        }
    }
}

/// What a reply says: the machine's view plus the names it runs under.
/// One JSON line; fields added later carry serde defaults so that a client
/// can read an older container-run's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub pid: Option<i32>,
    pub job: String,
    pub process: String,
    pub starts: u64,
    pub hold: bool,
    pub pending_start: bool,
    /// container-run will exit once the job has stopped (a SIGTERM, an
    /// errand's end, a crash): a START now is ignored.
    #[serde(default)]
    pub exiting: bool,
    pub post_start: PostStart,
    pub uptime_ms: Option<u64>,
    /// The last exit of the main process: its code, or 128 + signal.
    pub last_exit: Option<u8>,
    #[serde(default = "no_drain")]
    pub drain: Drain,
    /// What is left of the drain's deadline (SIGTERM + `--drain-timeout`)
    /// while it runs or waits at the barrier.
    #[serde(default)]
    pub drain_left_ms: Option<u64>,
    /// While stopping: what is left until SIGKILL (`None` once it is sent).
    #[serde(default)]
    pub stop_left_ms: Option<u64>,
    /// How long this container-run has been up (monit's uptime header).
    #[serde(default)]
    pub age_ms: u64,
}

fn no_drain() -> Drain {
    Drain::None
}

impl Status {
    /// The reply datagram: one line of JSON.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Read a reply back (the client side); `None` if it is not one.
    pub fn from_line(bytes: &[u8]) -> Option<Status> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What container-run answers a command that came by its rendezvous from
/// someone the socket's mode does not allow (the kernel's `permission
/// denied` at the named socket): one line, never a state.
pub const REFUSED: &str = "{\"refused\":\"permission denied\"}\n";

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(Status),
    Refused,
}

impl Reply {
    pub fn parse(bytes: &[u8]) -> Option<Reply> {
        if bytes == REFUSED.as_bytes() {
            return Some(Reply::Refused);
        }
        Status::from_line(bytes).map(Reply::Status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_trimmed_and_case_sensitive() {
        let cases: &[(&[u8], Option<ControlCommand>)] = &[
            (b"STOP", Some(ControlCommand::Stop)),
            (b"STOP\n", Some(ControlCommand::Stop)),
            (b" \t START \r\n", Some(ControlCommand::Start)),
            (b"\x0bTERM\x0c", Some(ControlCommand::Term)),
            (b"TERM", Some(ControlCommand::Term)),
            (b"QUIT\n", Some(ControlCommand::Quit)),
            (b"STATUS", Some(ControlCommand::Status)),
            (b"stop", None),
            (b"Stop", None),
            (b"", None),
            (b"\n", None),
            (b"STOP STOP", None),
            (b"STOP\0", None),
            (b"\xffSTOP", None),
            (b"STARTX", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(ControlCommand::parse(bytes), *want, "{bytes:?}");
        }
    }

    use serde_json::Value;

    /// The JSON names (serde) and the names tables and logs print
    /// (`as_str`) are written twice; they must not drift apart.
    #[test]
    fn wire_names_and_printed_names_agree() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for s in [
            State::Running,
            State::Draining,
            State::Stopping,
            State::Stopped,
        ] {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
        use PostStart as P;
        for p in [
            P::None,
            P::Pending,
            P::Running,
            P::Done,
            P::Failed,
            P::Skipped,
            P::Cancelled,
        ] {
            assert_eq!(json(serde_json::to_value(p).unwrap()), p.as_str());
        }
        use Drain as D;
        for d in [
            D::None,
            D::Ready,
            D::Running,
            D::Waiting,
            D::Done,
            D::Failed,
            D::TimedOut,
            D::Skipped,
            D::Cancelled,
        ] {
            assert_eq!(json(serde_json::to_value(d).unwrap()), d.as_str());
        }
    }

    #[test]
    fn reply_is_one_json_line_with_the_required_fields() {
        let status = Status {
            state: State::Running,
            pid: Some(42),
            job: "nats".into(),
            process: "nats".into(),
            starts: 3,
            hold: false,
            pending_start: false,
            exiting: false,
            post_start: PostStart::Done,
            uptime_ms: Some(1500),
            last_exit: Some(0),
            drain: Drain::TimedOut,
            drain_left_ms: Some(12),
            stop_left_ms: Some(7),
            age_ms: 9000,
        };
        let line = status.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["job"], "nats");
        assert_eq!(v["starts"], 3);
        assert_eq!(v["hold"], false);
        assert_eq!(v["post_start"], "done");
        assert_eq!(v["drain"], "timed-out");
        assert_eq!(Status::from_line(line.as_bytes()), Some(status.clone()));
        let stopped = Status {
            state: State::Stopped,
            pid: None,
            ..status
        };
        let v: Value = serde_json::from_str(&stopped.to_line()).unwrap();
        assert_eq!(v["state"], "stopped");
        assert!(v["pid"].is_null());
    }
}
