//! What each child of the job runs (SPEC sections 4, 5 and 8): the command
//! the machine's plan names, looked up when it is due, and its spawn with
//! the one line that says so. The plans and these commands come from the
//! same options (`setup::machine_config`): the machine asks only for a
//! child whose command is there.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::cli::RunConfig;
use crate::machine::drain::{JOB_STATE, NO_NEXT_STATE};
use crate::machine::{Child, Started};
use crate::tree::{self, Inherited, Output, SpawnSpec};

/// Start `child` as the machine asked, and say so; what became of it,
/// and the drain script's stdout, non-blocking.
pub fn spawn(cfg: &RunConfig, inherited: &Inherited, child: Child) -> (Started, Option<File>) {
    let spec = match choose(cfg, child) {
        Ok(spec) => spec,
        Err(missing) => {
            log::info!("{} {} not found: skipped", missing.what, missing.program);
            return (Started::Missing, None);
        }
    };
    let program = spec.program.to_string_lossy();
    match tree::spawn(&spec, inherited) {
        Ok(spawned) => {
            let pid = spawned.pid;
            let paths = &cfg.paths;
            match child {
                Child::Main => log::info!(
                    "running {program} as pid {pid} (job {}, process {})",
                    paths.job,
                    paths.process
                ),
                Child::Condition => log::debug!("post-start condition runs as pid {pid}"),
                Child::PostStart | Child::Drain(_) => {
                    log::info!("running {} {program} as pid {pid}", what(child))
                }
            }
            (Started::Pid(pid), spawned.stdout.map(nonblocking))
        }
        Err(e) => {
            // The job's own command gets the one-line style of every
            // fatal error (`container-run: /etc/passwd: permission
            // denied`), as it ends container-run with 126 or 127.
            if child == Child::Main {
                log::info!("{}", e.message);
            } else {
                log::error!("{}: {}", what(child), e.message);
            }
            (Started::Failed(e.code), None)
        }
    }
}

/// A command that is not there when it is due: skipped, with one line.
struct NotFound {
    what: &'static str,
    program: String,
}

/// The command of `child`, from the options its plan came from
/// (`machine_config`). The post-start and the drain are looked up when they
/// are due; the condition runs only for a post-start that exists (SPEC
/// sections 5 and 8).
fn choose(cfg: &RunConfig, child: Child) -> Result<SpawnSpec<'_>, NotFound> {
    let (program, args, output): (&OsStr, Vec<&OsStr>, Output) =
        match (child, &cfg.post_start, &cfg.condition, &cfg.drain) {
            (Child::Main, ..) => (
                cfg.command.program(),
                os(cfg.command.args()),
                Output::Inherit,
            ),
            (Child::Condition, Some(post_start), Some(condition), _) => {
                look_up(Child::PostStart, &post_start.program)?;
                (&condition.program, os(&condition.args), Output::Discard)
            }
            (Child::PostStart, Some(post_start), _, _) => {
                look_up(child, &post_start.program)?;
                (&post_start.program, os(&post_start.args), Output::Inherit)
            }
            (Child::Drain(call), _, _, Some(drain)) => {
                look_up(child, drain)?;
                (drain, call.map(OsStr::new).to_vec(), Output::Capture)
            }
            // Never asked: the plans name these children only with their
            // options.
            (Child::Condition | Child::PostStart | Child::Drain(_), ..) => {
                return Err(NotFound {
                    what: what(child),
                    program: String::new(),
                });
            }
        };
    let drain = matches!(child, Child::Drain(_));
    Ok(SpawnSpec {
        program,
        args,
        output,
        env_add: if drain { &[JOB_STATE] } else { &[] },
        env_remove: if drain { &[NO_NEXT_STATE] } else { &[] },
    })
}

fn look_up(child: Child, program: &OsStr) -> Result<(), NotFound> {
    match find_program(program) {
        Some(_) => Ok(()),
        None => Err(NotFound {
            what: what(child),
            program: program.to_string_lossy().into_owned(),
        }),
    }
}

fn os(args: &[std::ffi::OsString]) -> Vec<&OsStr> {
    args.iter().map(|a| a.as_os_str()).collect()
}

fn what(child: Child) -> &'static str {
    match child {
        Child::Main => "job",
        Child::Condition => "post-start condition",
        Child::PostStart => "post-start",
        Child::Drain(_) => "drain",
    }
}

fn nonblocking(fd: OwnedFd) -> std::fs::File {
    let file = std::fs::File::from(fd);
    if let Err(e) = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        log::warn!("cannot make the drain's output non-blocking: {e}");
    }
    file
}

/// A command "exists as a path or on PATH" (the post-start, the drain, the
/// job).
pub fn find_program(program: &OsStr) -> Option<PathBuf> {
    let p = std::path::Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
