//! The values of the command line that are not plain strings: durations,
//! stop signals, socket modes and groups, and how close a mistyped word is
//! to a name. Pure parsing, no side effect but reading `/etc/group`.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::Fatal;

/// The longest duration accepted: 100 years. Every duration becomes a
/// deadline (the clock plus the duration, at some later moment), and a
/// deadline that does not fit the clock would abort container-run in the
/// middle of a stop; 100 years fits for any clock value a machine reaches.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Durations as operators write them: `500ms`, `20s`, `15m`, `1h`, `1m30s`;
/// a bare number is seconds; at most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration_unbounded(text)?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is too large (at most 100 years, {}h)",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(d)
}

fn parse_duration_unbounded(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?} (use e.g. 500ms, 20s, 15m)"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "invalid unit {other:?} in duration {text:?} (use ms, s, m or h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(value)
            .ok()
            .and_then(|v| unit.checked_mul(v))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    Ok(total)
}

/// A stop signal as bpm's `shutdown_signal` names it: `TERM`, `sigint`,
/// `SIGQUIT` or a number 1-31; never one that cannot stop a job (STOP,
/// CONT, KILL, 0).
pub fn parse_stop_signal(text: &str) -> Result<Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let signal = match upper.parse::<i32>() {
        Ok(n) if (1..=31).contains(&n) => Signal::try_from(n).ok(),
        Ok(_) => None,
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper.clone()
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>().ok()
        }
    };
    match signal {
        Some(Signal::SIGSTOP | Signal::SIGCONT | Signal::SIGKILL) => Err(format!(
            "{text:?} cannot be a stop signal (not STOP, CONT or KILL)"
        )),
        Some(sig) => Ok(sig),
        None => Err(format!(
            "invalid signal {text:?} (a name such as TERM, INT, QUIT, or a number 1-31)"
        )),
    }
}

/// A group number, or a name looked up in /etc/group. Read directly rather
/// than through the C library's name service, so that a static binary needs
/// no NSS modules in the job's image. 4294967295 is `(gid_t)-1`, which
/// chown takes as "leave the group alone": accepting it would do nothing.
pub fn resolve_group(group: &str) -> Result<u32, Fatal> {
    let gid = match group.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => {
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            find_group(&groups, group).ok_or_else(|| {
                Fatal::Usage(format!("unknown group {group:?} (not in /etc/group)"))
            })?
        }
    };
    if gid == u32::MAX {
        return Err(Fatal::Usage(format!(
            "invalid group {group:?}: 4294967295 is not a group (it means \"no change\")"
        )));
    }
    Ok(gid)
}

fn find_group(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// An octal file mode for the socket; the owner keeps read and write so that
/// container-run can always be reached by the user it runs as.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid mode {text:?} (octal, e.g. 0660)"))?;
    if mode > 0o777 {
        return Err(format!("invalid mode {text:?}: at most 0777"));
    }
    Ok(mode | 0o600)
}

/// Whether a mistyped `word` is close to `name`: the same but for case, or
/// at most two edits (insert, delete, replace, swap) apart.
pub fn is_close(word: &str, name: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (
        word.to_lowercase().chars().collect(),
        name.chars().collect(),
    );
    if a == b {
        return true;
    }
    if a.len().abs_diff(b.len()) > 2 || a.len() < 2 {
        return false;
    }
    // Optimal string alignment distance, row by row.
    let mut rows = vec![(0..=b.len()).collect::<Vec<usize>>()];
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (rows[i - 1][j] + 1)
                .min(row[j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(rows[i - 2][j - 2] + 1);
            }
        }
        rows.push(row);
    }
    rows[a.len()][b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals() {
        for (text, want) in [
            ("TERM", Signal::SIGTERM),
            ("int", Signal::SIGINT),
            ("SIGQUIT", Signal::SIGQUIT),
            ("sigusr1", Signal::SIGUSR1),
            ("2", Signal::SIGINT),
            ("31", Signal::SIGSYS),
        ] {
            assert_eq!(parse_stop_signal(text), Ok(want), "{text}");
        }
        for bad in [
            "STOP", "SIGCONT", "kill", "9", "0", "32", "-1", "", "SIGNOPE", "SIG",
        ] {
            assert!(parse_stop_signal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "5x", "-1s", "1.5s", "ms5", "5 s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        for huge in [
            "18446744073709551615",
            "9223372036854775807",
            "876001h",
            "3153600001",
        ] {
            assert!(parse_duration(huge).is_err(), "{huge:?} accepted");
        }
    }

    #[test]
    fn groups() {
        let etc = "root:x:0:\nvcap:x:1000:alice,bob\nbroken\nodd:x:notanumber:\n";
        assert_eq!(find_group(etc, "vcap"), Some(1000));
        assert_eq!(find_group(etc, "root"), Some(0));
        assert_eq!(find_group(etc, "odd"), None);
        assert_eq!(find_group(etc, "missing"), None);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("4294967294").unwrap(), 4294967294);
        assert_eq!(resolve_group("4294967295").unwrap_err().exit_code(), 2);
        assert_eq!(
            resolve_group("no-such-group-here").unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        assert_eq!(parse_mode("0060"), Ok(0o660), "owner keeps read/write");
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
    }

    #[test]
    fn mistyped_words_are_close_to_names() {
        for (word, name) in [
            ("ctrl", "ctl"),
            ("CTL", "ctl"),
            ("moint", "monit"),
            ("bmp", "bpm"),
        ] {
            assert!(is_close(word, name), "{word} ~ {name}");
        }
        for (word, name) in [("sleep", "ctl"), ("x", "ctl"), ("install", "ctl")] {
            assert!(!is_close(word, name), "{word} !~ {name}");
        }
    }
}
