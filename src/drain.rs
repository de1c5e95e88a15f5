//! The BOSH agent's drain contract (SPEC section 8), the pure part: the
//! arguments and environment of a drain call, and what its exit and stdout
//! mean. The machine decides when to call; the loop runs the script.

use std::time::Duration;

use crate::tree::Exit;

/// Which of the two calls of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCall {
    /// The first call, when the job is to be stopped.
    Shutdown,
    /// A dynamic drain's follow-up, after its negative wait.
    CheckStatus,
}

impl DrainCall {
    /// The script's arguments, exactly as the agent passed them.
    pub fn args(self) -> [&'static str; 2] {
        match self {
            DrainCall::Shutdown => ["job_shutdown", "hash_unchanged"],
            DrainCall::CheckStatus => ["job_check_status", "hash_unchanged"],
        }
    }
}

/// Added to container-run's environment for the script (exactly this text).
pub const JOB_STATE: (&str, &str) = ("BOSH_JOB_STATE", r#"{"persistent_disk":0}"#);
/// Removed from it: there is no next state in a pod.
pub const NO_NEXT_STATE: &str = "BOSH_JOB_NEXT_STATE";
/// More stdout than this is garbage, not an integer.
pub const MAX_OUTPUT: usize = 4096;

/// What the script asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait this long, then the drain is done.
    WaitThenDone(Duration),
    /// Wait this long, then call `job_check_status`.
    WaitThenCheck(Duration),
}

/// Judge one call: a non-zero exit, a death by signal, or anything on stdout
/// but one signed integer (surrounded by ASCII whitespace) has failed; the
/// error says which, for the one log line.
pub fn judge(exit: Exit, stdout: &[u8]) -> Result<Verdict, String> {
    if exit != Exit::Code(0) {
        return Err(format!("the drain script {exit}"));
    }
    if stdout.len() > MAX_OUTPUT {
        return Err(format!(
            "the drain script printed more than {MAX_OUTPUT} bytes"
        ));
    }
    let text = std::str::from_utf8(stdout)
        .ok()
        .map(|s| s.trim_matches(|c: char| c.is_ascii_whitespace()))
        .unwrap_or_default();
    let n: i64 = text
        .parse()
        .map_err(|_| format!("the drain script printed {text:?}, not one integer"))?;
    let secs = Duration::from_secs(n.unsigned_abs());
    Ok(if n < 0 {
        Verdict::WaitThenCheck(secs)
    } else {
        Verdict::WaitThenDone(secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_read_as_the_agent_reads_them() {
        let ok = Exit::Code(0);
        let s = Duration::from_secs;
        assert_eq!(judge(ok, b"0\n"), Ok(Verdict::WaitThenDone(s(0))));
        assert_eq!(judge(ok, b" 5 \n"), Ok(Verdict::WaitThenDone(s(5))));
        assert_eq!(judge(ok, b"+7"), Ok(Verdict::WaitThenDone(s(7))));
        assert_eq!(judge(ok, b"-3\n"), Ok(Verdict::WaitThenCheck(s(3))));
        for bad in [&b""[..], b"\n", b"1 2", b"one", b"1.5", b"0x10", b"\xff"] {
            assert!(judge(ok, bad).is_err(), "{bad:?}");
        }
        let long = vec![b' '; MAX_OUTPUT + 1];
        assert!(judge(ok, &long).unwrap_err().contains("more than"));
        assert!(judge(Exit::Code(1), b"0").unwrap_err().contains("status 1"));
        assert!(
            judge(Exit::Signal(9), b"0")
                .unwrap_err()
                .contains("signal 9")
        );
        assert_eq!(
            DrainCall::Shutdown.args(),
            ["job_shutdown", "hash_unchanged"]
        );
        assert_eq!(
            DrainCall::CheckStatus.args(),
            ["job_check_status", "hash_unchanged"]
        );
    }
}
