//! Property tests (proptest) for everything that parses input from outside
//! the process: datagrams, durations, names and paths, reply lines, /proc.
//! Bounded: proptest's default of 256 cases per property, or
//! PROPTEST_CASES for a longer run.

use std::path::{Component, Path};
use std::time::Duration;

use container_run::cli::{parse_duration, parse_mode, validate_name};
use container_run::paths::Paths;
use container_run::protocol::{ControlCommand, Drain, PostStart, State, Status};
use container_run::tree::parse_stat;
use proptest::prelude::*;

const COMMANDS: [&str; 5] = ["START", "STOP", "TERM", "QUIT", "STATUS"];

fn whitespace() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec![' ', '\t', '\n', '\r', '\x0b', '\x0c']),
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn any_datagram_parses_without_panic_and_only_exact_commands_match(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let got = ControlCommand::parse(&bytes);
        let space = |b: &u8| b" \t\n\x0b\x0c\r".contains(b);
        let mut trimmed: &[u8] = &bytes;
        while let [first, rest @ ..] = trimmed && space(first) {
            trimmed = rest;
        }
        while let [rest @ .., last] = trimmed && space(last) {
            trimmed = rest;
        }
        let want = COMMANDS.iter().any(|c| c.as_bytes() == trimmed);
        prop_assert_eq!(got.is_some(), want);
        if let Some(cmd) = got {
            prop_assert_eq!(cmd.as_str().as_bytes(), trimmed);
        }
    }

    #[test]
    fn commands_with_whitespace_around_them_are_recognised(
        i in 0usize..5, before in whitespace(), after in whitespace()
    ) {
        let datagram = format!("{before}{}{after}", COMMANDS[i]);
        let cmd = ControlCommand::parse(datagram.as_bytes());
        prop_assert_eq!(cmd.map(|c| c.as_str()), Some(COMMANDS[i]));
    }

    #[test]
    fn near_misses_are_ignored(i in 0usize..5, extra in "[a-zA-Z0-9\\x00-\\x08]{1,4}", at_end in any::<bool>()) {
        let c = COMMANDS[i];
        let datagram = if at_end { format!("{c}{extra}") } else { format!("{extra}{c}") };
        prop_assert_eq!(ControlCommand::parse(datagram.as_bytes()), None);
        prop_assert_eq!(ControlCommand::parse(c.to_lowercase().as_bytes()), None);
    }

    #[test]
    fn any_duration_text_parses_without_panic(text in ".{0,40}") {
        let _ = parse_duration(&text);
        let _ = parse_mode(&text);
    }

    #[test]
    fn composed_durations_add_up(parts in proptest::collection::vec((0u64..100_000, 0usize..4), 1..4)) {
        let units = [("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", units[*u].0)).collect();
        let want: u64 = parts.iter().map(|(n, u)| n * units[*u].1).sum();
        prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(want)));
    }

    #[test]
    fn accepted_names_never_place_a_file_outside_base(job in ".{0,12}", process in ".{0,12}") {
        let base = Path::new("/var/vcap");
        let (Ok(job), Ok(process)) = (validate_name("job", &job), validate_name("process", &process)) else {
            return Ok(());
        };
        let Ok(paths) = Paths::new(base, &job, &process) else {
            return Ok(()); // only a socket path over the limit is refused here
        };
        for p in [&paths.socket, &paths.running, &paths.stopped, &paths.pidfile] {
            prop_assert!(p.starts_with(base));
            prop_assert!(p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
        }
        prop_assert_eq!(paths.socket.parent().unwrap(), base.join("data").join(&job));
        prop_assert_eq!(paths.pidfile.parent().unwrap(), base.join("sys/run/bpm").join(&job));
    }

    #[test]
    fn names_with_a_slash_or_nul_or_dots_are_refused(a in "[a-z]{0,5}", b in "[a-z]{0,5}", sep in prop::sample::select(vec!["/", "\0"])) {
        let name = format!("{a}{sep}{b}");
        prop_assert!(validate_name("job", &name).is_err());
        prop_assert!(validate_name("job", ".").is_err());
        prop_assert!(validate_name("job", "..").is_err());
    }

    #[test]
    fn reply_lines_round_trip(
        state in 0usize..4, pid in proptest::option::of(1i32..i32::MAX), starts in any::<u64>(),
        hold in any::<bool>(), pending in any::<bool>(), ps in 0usize..7,
        uptime in proptest::option::of(any::<u64>()), last in proptest::option::of(any::<u8>()),
        job in "[^/\\x00]{1,10}", process in "[^/\\x00]{1,10}"
    ) {
        let status = Status {
            state: [State::Running, State::Draining, State::Stopping, State::Stopped][state],
            pid, job, process, starts, hold, pending_start: pending, exiting: hold,
            post_start: [PostStart::None, PostStart::Pending, PostStart::Running, PostStart::Done,
                PostStart::Failed, PostStart::Skipped, PostStart::Cancelled][ps],
            uptime_ms: uptime, last_exit: last,
            drain: Drain::Waiting, drain_left_ms: uptime, stop_left_ms: last.map(u64::from), age_ms: starts,
        };
        let line = status.to_line();
        prop_assert_eq!(line.matches('\n').count(), 1);
        prop_assert_eq!(Status::from_line(line.as_bytes()), Some(status));
    }

    #[test]
    fn any_reply_text_is_read_without_panic(text in ".{0,200}") {
        let _ = Status::from_line(text.as_bytes());
    }

    #[test]
    fn any_proc_stat_text_is_read_without_panic(text in ".{0,120}") {
        let _ = parse_stat(&text);
    }
}
