//! Every file of SPEC section 2, derived from BASE, JOB and PROCESS in one
//! place, and the one validator of JOB and PROCESS: a `Paths` exists only
//! for single-component names, so every path here stays under BASE.

use std::path::{Path, PathBuf};

use crate::error::Fatal;

/// The kernel's `sun_path` is 108 bytes including the terminating NUL.
pub const SOCKET_PATH_MAX: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub job: String,
    pub process: String,
    pub base: PathBuf,
    /// `BASE/data/JOB`: socket, sentinel and STOP marker live here.
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub running: PathBuf,
    pub stopped: PathBuf,
    /// `BASE/sys/run/bpm/JOB`
    pub pid_dir: PathBuf,
    pub pidfile: PathBuf,
    /// `BASE/jobs/bpm/bin/bpm` and `BASE/bosh/bin/monit`: the compatibility
    /// links container-run installs (SPEC section 2).
    pub bpm: PathBuf,
    pub monit: PathBuf,
}

impl Paths {
    pub fn new(base: &Path, job: &str, process: &str) -> Result<Paths, Fatal> {
        let job = validate_name("job", job)?;
        let process = validate_name("process", process)?;
        let data_dir = base.join("data").join(&job);
        let pid_dir = base.join("sys/run/bpm").join(&job);
        let paths = Paths {
            base: base.to_path_buf(),
            socket: data_dir.join(format!("{process}_containerrun.sock")),
            running: data_dir.join(format!("{process}_containerrun.running")),
            stopped: data_dir.join(format!("{process}_containerrun.stopped")),
            pidfile: pid_dir.join(format!("{process}.pid")),
            bpm: base.join("jobs/bpm/bin/bpm"),
            monit: base.join("bosh/bin/monit"),
            data_dir,
            pid_dir,
            job,
            process,
        };
        check_socket_len(&paths.socket)?;
        Ok(paths)
    }
}

/// JOB and PROCESS become path components under BASE, so they must be one
/// plain component: anything else could place a file outside BASE.
pub fn validate_name(what: &str, name: &str) -> Result<String, Fatal> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0');
    if bad {
        return Err(Fatal::Usage(format!(
            "invalid {what} name {name:?}: it must be non-empty, not '.' or '..', without '/' or NUL"
        )));
    }
    Ok(name.to_string())
}

pub fn check_socket_len(socket: &Path) -> Result<(), Fatal> {
    let len = socket.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(Fatal::Usage(format!(
            "socket path {} is {len} bytes, over the kernel's limit of {SOCKET_PATH_MAX}: use a shorter --base-dir, job or process name",
            socket.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_go_original() {
        let p = Paths::new(Path::new("/var/vcap"), "nats", "nats-server").unwrap();
        assert_eq!(
            p.socket,
            Path::new("/var/vcap/data/nats/nats-server_containerrun.sock")
        );
        assert_eq!(
            p.running,
            Path::new("/var/vcap/data/nats/nats-server_containerrun.running")
        );
        assert_eq!(
            p.stopped,
            Path::new("/var/vcap/data/nats/nats-server_containerrun.stopped")
        );
        assert_eq!(
            p.pidfile,
            Path::new("/var/vcap/sys/run/bpm/nats/nats-server.pid")
        );
        assert_eq!(p.bpm, Path::new("/var/vcap/jobs/bpm/bin/bpm"));
        assert_eq!(p.monit, Path::new("/var/vcap/bosh/bin/monit"));
    }

    #[test]
    fn socket_path_over_the_limit_is_a_usage_error() {
        let long = "p".repeat(100);
        let err = Paths::new(Path::new("/var/vcap"), "j", &long).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let exact = "p".repeat(SOCKET_PATH_MAX - "/b/data/j/_containerrun.sock".len());
        assert!(Paths::new(Path::new("/b"), "j", &exact).is_ok());
    }
}
